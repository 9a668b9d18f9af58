//! The query half of the gateway API: questions sent with an id to one gateway or to all,
//! answered within [`QUERY_TIMEOUT`] and aggregated (counts summed, lists concatenated,
//! booleans or-ed). A reply of the wrong kind is an error, never a guess.

use protocol::link::{
    ClientId, ClientInfo, GatewayStats, PackedSession, Query, Reply, WorkerToGateway,
};
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::{lock, Gateway, GatewayError, Inner, LinkTx, Pending, QUERY_TIMEOUT};

/// Removes a pending query when its caller stops waiting (reply, timeout or cancellation).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.pending).remove(&self.id);
    }
}

impl Gateway {
    async fn ask(&self, gateway: u16, link: LinkTx, query: Query) -> Result<Reply, GatewayError> {
        let id = self.inner.next_query.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(
            id,
            Pending {
                serial: link.serial,
                tx,
            },
        );
        let _guard = PendingGuard {
            inner: &self.inner,
            id,
        };
        link.tx
            .send(WorkerToGateway::Query { id, query })
            .await
            .map_err(|_| GatewayError::LinkClosed(gateway))?;
        match tokio::time::timeout(QUERY_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(GatewayError::LinkClosed(gateway)),
            Err(_) => Err(GatewayError::Timeout {
                gateway,
                after: QUERY_TIMEOUT,
            }),
        }
    }

    async fn ask_one(&self, gateway: u16, query: Query) -> Result<Reply, GatewayError> {
        let link = self.route(gateway)?;
        self.ask(gateway, link, query).await
    }

    /// Asks every linked gateway at once; fails if any of them fails.
    async fn ask_all(&self, query: Query) -> Result<Vec<(u16, Reply)>, GatewayError> {
        let asks = self.links().into_iter().map(|(gateway, link)| {
            let query = query.clone();
            async move {
                self.ask(gateway, link, query)
                    .await
                    .map(|reply| (gateway, reply))
            }
        });
        futures::future::join_all(asks).await.into_iter().collect()
    }

    /// `isOnline`: is this connection open?
    pub async fn is_online(&self, client: ClientId) -> Result<bool, GatewayError> {
        let gateway = client.gateway();
        expect_bool(
            gateway,
            "IsOnline",
            self.ask_one(gateway, Query::IsOnline(client)).await?,
        )
    }

    /// `isUidOnline`: is any connection, on any gateway, bound to `uid`? Answered from the
    /// routing table when it knows a gateway holding `uid`; a "no" is always the gateways'.
    pub async fn is_uid_online(&self, uid: &str) -> Result<bool, GatewayError> {
        if self.known_online(uid) {
            return Ok(true);
        }
        let replies = self.ask_all(Query::IsUidOnline(uid.to_string())).await?;
        let mut online = false;
        for (gateway, reply) in replies {
            online |= expect_bool(gateway, "IsUidOnline", reply)?;
        }
        Ok(online)
    }

    /// `getClientIdByUid`: every connection bound to `uid`.
    pub async fn client_ids_by_uid(&self, uid: &str) -> Result<Vec<ClientId>, GatewayError> {
        let replies = self.ask_all(Query::ClientIdsByUid(uid.to_string())).await?;
        concat(replies, "ClientIdsByUid", |reply| match reply {
            Reply::Clients(clients) => Ok(clients),
            other => Err(other),
        })
    }

    /// `getUidByClientId`.
    pub async fn uid_by_client_id(&self, client: ClientId) -> Result<Option<String>, GatewayError> {
        let gateway = client.gateway();
        match self.ask_one(gateway, Query::UidByClientId(client)).await? {
            Reply::Uid(uid) => Ok(uid),
            reply => Err(GatewayError::UnexpectedReply {
                gateway,
                query: "UidByClientId",
                reply: Box::new(reply),
            }),
        }
    }

    /// `getAllClientIdCount`.
    pub async fn client_count(&self) -> Result<u64, GatewayError> {
        self.sum(Query::ClientCount(None), "ClientCount").await
    }

    /// `getClientIdCountByGroup`.
    pub async fn group_client_count(&self, group: &str) -> Result<u64, GatewayError> {
        self.sum(Query::ClientCount(Some(group.to_string())), "ClientCount")
            .await
    }

    /// `getAllClientIdList`.
    pub async fn client_ids(&self) -> Result<Vec<ClientId>, GatewayError> {
        self.clients(Query::ClientIds(None)).await
    }

    /// `getClientIdListByGroup`.
    pub async fn group_client_ids(&self, group: &str) -> Result<Vec<ClientId>, GatewayError> {
        self.clients(Query::ClientIds(Some(group.to_string())))
            .await
    }

    /// `getAllUidList` (a uid bound on two gateways appears once).
    pub async fn uids(&self) -> Result<Vec<String>, GatewayError> {
        let replies = self.ask_all(Query::Uids).await?;
        let mut uids = concat(replies, "Uids", |reply| match reply {
            Reply::Uids(uids) => Ok(uids),
            other => Err(other),
        })?;
        uids.sort();
        uids.dedup();
        Ok(uids)
    }

    /// `getAllUidCount`, summed over gateways (a uid bound on two gateways counts twice).
    pub async fn uid_count(&self) -> Result<u64, GatewayError> {
        self.sum(Query::UidCount, "UidCount").await
    }

    /// `getAllGroupIdList` (a group present on two gateways appears once).
    pub async fn groups(&self) -> Result<Vec<String>, GatewayError> {
        let replies = self.ask_all(Query::Groups).await?;
        let mut groups = concat(replies, "Groups", |reply| match reply {
            Reply::Groups(groups) => Ok(groups),
            other => Err(other),
        })?;
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// `getSession`: the freshest copy this worker knows, else the gateway's.
    pub async fn get_session(
        &self,
        client: ClientId,
    ) -> Result<Option<PackedSession>, GatewayError> {
        if let Some(session) = self.inner.sessions.get(client) {
            return Ok(Some(session));
        }
        let gateway = client.gateway();
        match self.ask_one(gateway, Query::GetSession(client)).await? {
            Reply::Session(session) => Ok(session),
            reply => Err(GatewayError::UnexpectedReply {
                gateway,
                query: "GetSession",
                reply: Box::new(reply),
            }),
        }
    }

    /// `getAllClientSessions`: every open connection with its uid and session.
    pub async fn client_sessions(&self) -> Result<Vec<ClientInfo>, GatewayError> {
        self.sessions_of(None).await
    }

    /// `getClientSessionsByGroup`.
    pub async fn group_client_sessions(
        &self,
        group: &str,
    ) -> Result<Vec<ClientInfo>, GatewayError> {
        self.sessions_of(Some(group.to_string())).await
    }

    /// Every linked gateway's counters.
    pub async fn stats(&self) -> Result<Vec<GatewayStats>, GatewayError> {
        let replies = self.ask_all(Query::Stats).await?;
        concat(replies, "Stats", |reply| match reply {
            Reply::Stats(stats) => Ok(vec![stats]),
            other => Err(other),
        })
    }

    async fn sessions_of(&self, group: Option<String>) -> Result<Vec<ClientInfo>, GatewayError> {
        let replies = self.ask_all(Query::Sessions(group)).await?;
        let mut infos = concat(replies, "Sessions", |reply| match reply {
            Reply::Sessions(infos) => Ok(infos),
            other => Err(other),
        })?;
        // The gateway's copies may predate this worker's own updates.
        for info in &mut infos {
            if let Some(session) = self.inner.sessions.get(info.client) {
                info.session = session;
            }
        }
        Ok(infos)
    }

    async fn sum(&self, query: Query, name: &'static str) -> Result<u64, GatewayError> {
        let mut total = 0u64;
        for (gateway, reply) in self.ask_all(query).await? {
            match reply {
                Reply::Count(n) => total = total.saturating_add(n),
                reply => {
                    return Err(GatewayError::UnexpectedReply {
                        gateway,
                        query: name,
                        reply: Box::new(reply),
                    })
                }
            }
        }
        Ok(total)
    }

    async fn clients(&self, query: Query) -> Result<Vec<ClientId>, GatewayError> {
        let replies = self.ask_all(query).await?;
        concat(replies, "ClientIds", |reply| match reply {
            Reply::Clients(clients) => Ok(clients),
            other => Err(other),
        })
    }
}

fn expect_bool(gateway: u16, query: &'static str, reply: Reply) -> Result<bool, GatewayError> {
    match reply {
        Reply::Bool(b) => Ok(b),
        reply => Err(GatewayError::UnexpectedReply {
            gateway,
            query,
            reply: Box::new(reply),
        }),
    }
}

/// Concatenates list replies, failing on the first reply of the wrong kind.
fn concat<T>(
    replies: Vec<(u16, Reply)>,
    query: &'static str,
    take: impl Fn(Reply) -> Result<Vec<T>, Reply>,
) -> Result<Vec<T>, GatewayError> {
    let mut all = Vec::new();
    for (gateway, reply) in replies {
        let items = take(reply).map_err(|reply| GatewayError::UnexpectedReply {
            gateway,
            query,
            reply: Box::new(reply),
        })?;
        all.extend(items);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::link::Outbound;
    use tokio::sync::mpsc;

    use super::super::LINK_QUEUE;
    use super::*;

    /// A gateway stand-in answering every query on one link with `answer`.
    fn fake_link(
        gateway: &Gateway,
        id: u16,
        answer: impl Fn(&Query) -> Option<Reply> + Send + 'static,
    ) {
        let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
        gateway.register(id, tx);
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let WorkerToGateway::Query { id, query } = msg {
                    if let Some(reply) = answer(&query) {
                        gateway.deliver_reply(id, reply);
                    }
                }
            }
        });
    }

    #[tokio::test]
    async fn queries_are_aggregated_across_gateways() {
        let gateway = Gateway::new(true);
        fake_link(&gateway, 1, |q| match q {
            Query::ClientCount(_) => Some(Reply::Count(2)),
            Query::IsUidOnline(_) => Some(Reply::Bool(false)),
            Query::Uids => Some(Reply::Uids(vec!["1".into(), "2".into()])),
            _ => None,
        });
        fake_link(&gateway, 2, |q| match q {
            Query::ClientCount(_) => Some(Reply::Count(3)),
            Query::IsUidOnline(_) => Some(Reply::Bool(true)),
            Query::Uids => Some(Reply::Uids(vec!["2".into(), "3".into()])),
            _ => None,
        });
        assert_eq!(gateway.client_count().await.unwrap(), 5);
        assert!(gateway.is_uid_online("3").await.unwrap());
        assert_eq!(gateway.uids().await.unwrap(), ["1", "2", "3"]);
        assert_eq!(gateway.linked_gateways(), [1, 2]);
    }

    #[tokio::test]
    async fn a_client_on_an_unlinked_gateway_is_a_typed_error() {
        let gateway = Gateway::new(true);
        let err = gateway
            .send_to_client(ClientId::new(9, 1), Outbound::Line("x".into()))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::NotLinked(9)), "{err:?}");
        // With nothing linked, broadcasts go nowhere and counts are zero.
        gateway
            .send_to_all(Outbound::Line("x".into()), &[])
            .await
            .unwrap();
        assert_eq!(gateway.client_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_wrong_reply_kind_is_reported() {
        let gateway = Gateway::new(true);
        fake_link(&gateway, 1, |_| Some(Reply::Bool(true)));
        let err = gateway.client_count().await.unwrap_err();
        assert!(
            matches!(err, GatewayError::UnexpectedReply { gateway: 1, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_link_going_down_fails_its_pending_queries_at_once() {
        let gateway = Gateway::new(true);
        let (tx, mut rx) = mpsc::channel(4);
        let serial = gateway.register(1, tx);
        let asking = tokio::spawn({
            let gateway = gateway.clone();
            async move { gateway.is_online(ClientId::new(1, 5)).await }
        });
        assert!(matches!(
            rx.recv().await,
            Some(WorkerToGateway::Query { .. })
        ));
        gateway.unregister(1, serial);
        let result = tokio::time::timeout(Duration::from_secs(1), asking)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(GatewayError::LinkClosed(1))),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_query_times_out() {
        let gateway = Gateway::new(true);
        fake_link(&gateway, 1, |_| None);
        let err = gateway.is_online(ClientId::new(1, 5)).await.unwrap_err();
        assert!(
            matches!(err, GatewayError::Timeout { gateway: 1, .. }),
            "{err:?}"
        );
        assert!(lock(&gateway.inner.pending).is_empty());
    }
}
