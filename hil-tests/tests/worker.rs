//! Worker processes: one per data dir, and a restart the telnet users do not notice
//! beyond a pause.

use std::time::Duration;

use hil::harness::{nickname_prompt, Cluster, ClusterOptions};

#[tokio::test]
async fn a_second_worker_on_the_same_data_dir_fails_clearly() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;

    let mut second = c.spawn_worker();
    let status = second
        .wait_timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("a second worker on the same data dir kept running"));
    assert!(!status.success(), "second worker exited with {status}");
    // Some line must say what is wrong, naming the data directory or its lock.
    let log = second.log();
    let data_dir = c.data_dir.to_string_lossy().into_owned();
    assert!(
        log.lines().any(|l| {
            let lower = l.to_lowercase();
            (lower.contains("error") || lower.contains("cannot"))
                && (l.contains(&data_dir) || lower.contains("data dir") || lower.contains("lock"))
        }),
        "the second worker's error should name the data directory ({data_dir}) or its lock:\n{log}"
    );

    c.assert_alive();
    alice
        .say_and_wait(&mut bob, "first worker still here")
        .await;
}

#[tokio::test]
async fn users_stay_connected_across_a_worker_restart() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    alice.say_and_wait(&mut bob, "before").await;

    c.kill_worker().await;
    c.start_worker().await; // returns once the new worker greets a new connection

    alice.say_and_wait(&mut bob, "after the restart").await;
    bob.say_and_wait(&mut alice, "heard you").await;
    bob.send_line(&format!("{}:private after restart", alice.uid()))
        .await;
    alice
        .expect_line(format!("{} -> you: private after restart", bob.tag()))
        .await;
}

/// Uids are unique, also after a worker crash: someone joining after the restart gets a
/// uid that none of the users still connected has.
#[tokio::test]
async fn uids_stay_unique_across_a_worker_crash() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let bob = c.user("bob").await;
    c.kill_worker().await;
    c.start_worker().await;
    let carol = c.user("carol").await;
    assert_ne!(
        carol.uid(),
        alice.uid(),
        "carol got alice's uid after the restart"
    );
    assert_ne!(
        carol.uid(),
        bob.uid(),
        "carol got bob's uid after the restart"
    );
    alice.expect_line(format!("* {} joined", carol.tag())).await;
}

/// A user who connects while no worker is linked is greeted once one links: the gateway
/// holds the connection's events (`pending_events`) and the new worker handles them.
#[tokio::test]
async fn a_user_connecting_before_any_worker_is_greeted_once_one_links() {
    let mut c = Cluster::start_with(ClusterOptions {
        no_worker: true,
        ..Default::default()
    })
    .await;
    let mut early = c.connect("early").await;
    // Let the gateway register the connection before the worker exists.
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.start_worker().await;
    early.expect_prompt(nickname_prompt()).await;
    early.send_line("early").await;
    early
        .expect_line(hil::harness::Matcher::starts_with(
            "* welcome early, your uid is ",
        ))
        .await;
}
