//! The event-handler trait a worker application implements, and the [`Context`] each
//! call gets: the gateway API, the store, and the current client's session.
//!
//! Handlers run one event at a time, in arrival order. An error (or a panic) in one call is
//! logged with the client id and the worker goes on; it never kills the worker.

use std::future::Future;
use std::sync::Arc;

use protocol::link::{ClientId, ClientKind, PackedSession, Session};
use protocol::DeviceMsg;

use crate::gateway_api::{Gateway, GatewayError};
use crate::store::Store;

/// Whatever went wrong in a handler; logged, then forgotten.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;
/// What every handler method returns.
pub type HandlerResult = Result<(), HandlerError>;

/// The application side of a worker (GatewayWorker's `Events` class). Every method has a
/// default that does nothing, so an application implements only what it needs.
///
/// Implement the methods with `async fn`; their futures must be `Send`.
pub trait Handler: Send + 'static {
    /// A connection was opened (`onConnect`). Devices say who they are later, in a `Hello`.
    fn on_connect(
        &mut self,
        cx: &Context,
        client: ClientId,
        kind: ClientKind,
        peer: String,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (cx, client, kind, peer);
        async { Ok(()) }
    }

    /// A telnet user sent a line (`onMessage`): no terminator, valid UTF-8.
    fn on_message(
        &mut self,
        cx: &Context,
        client: ClientId,
        line: String,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (cx, client, line);
        async { Ok(()) }
    }

    /// A device sent a frame (`Hello`, `Chat`, `Telemetry`, `Error`; the gateway keeps
    /// pings and acks to itself).
    fn on_device(
        &mut self,
        cx: &Context,
        client: ClientId,
        msg: DeviceMsg,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (cx, client, msg);
        async { Ok(()) }
    }

    /// A connection closed (`onClose`); `uid` is the uid it was bound to. Its bindings and
    /// groups are gone; [`Context::session`] still has its last session.
    fn on_close(
        &mut self,
        cx: &Context,
        client: ClientId,
        uid: Option<String>,
    ) -> impl Future<Output = HandlerResult> + Send {
        let _ = (cx, client, uid);
        async { Ok(()) }
    }
}

/// What a handler call can use besides its arguments.
pub struct Context {
    gateway: Gateway,
    store: Arc<dyn Store>,
    client: ClientId,
}

impl Context {
    pub(crate) fn new(gateway: Gateway, store: Arc<dyn Store>, client: ClientId) -> Context {
        Context {
            gateway,
            store,
            client,
        }
    }

    /// The gateway API.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The client whose event is being handled.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// The current client's session, including changes this worker made in earlier events
    /// that the gateway had not applied yet when it sent this one. Empty on connect.
    pub fn session(&self) -> PackedSession {
        self.gateway.sessions().get(self.client).unwrap_or_default()
    }

    /// Replaces the current client's session (here and on its gateway).
    pub async fn set_session(&self, session: Session) -> Result<(), GatewayError> {
        self.gateway.set_session(self.client, session).await
    }

    /// Merges keys into the current client's session (here and on its gateway).
    pub async fn update_session(&self, session: Session) -> Result<(), GatewayError> {
        self.gateway.update_session(self.client, session).await
    }
}
