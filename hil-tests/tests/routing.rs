//! Targeted routing across gateways, counted: with 1, 2 and 4 gateways, users on every
//! gateway send private messages to users on the next gateway, and the gateways' link
//! counters say how many internal messages (events, commands, queries, replies; acks aside) each
//! private message cost, with the routing table and without it (GatewayWorker's way).
//!
//! Run `cargo test -p hil-tests --test routing -- --nocapture` for the table.

use std::time::Duration;

use hil::harness::{gateway_stats, wait_greeted, Farm, GatewaySpec, TelnetUser, WorkerSpec};

/// Users per gateway.
const USERS_PER_GATEWAY: usize = 2;
/// Private messages each user sends.
const MESSAGES_EACH: usize = 10;
const READY: Duration = Duration::from_secs(20);

/// Internal messages per private message for `gateways` gateways and `routing`.
async fn cost(gateways: u16, routing: &str) -> f64 {
    let mut farm = Farm::new();
    let secret = "routing-test";
    let specs: Vec<GatewaySpec> = (1..=gateways)
        .map(|id| GatewaySpec::loopback(id, secret))
        .collect();
    for spec in &specs {
        farm.gateway(spec);
    }
    let mut worker = WorkerSpec::new(&specs.iter().collect::<Vec<_>>(), &farm.dir().join("data"));
    worker.routing = routing.to_owned();
    farm.worker(&worker);
    for spec in &specs {
        wait_greeted(spec.telnet, READY)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    // User i is on gateway i % n and writes to user i + 1, who is on the next gateway.
    let n = specs.len();
    let total = n * USERS_PER_GATEWAY;
    let mut users = Vec::with_capacity(total);
    for i in 0..total {
        let spec = &specs[i % n];
        let mut user = TelnetUser::connect(spec.telnet, &format!("u{i}"))
            .await
            .expect("telnet connect");
        user.login(&format!("u{i}")).await;
        users.push(user);
    }
    // Everyone's login lines (joins) are through before counting starts.
    for i in 0..total {
        let (a, b) = pair(&mut users, i, (i + 1) % total);
        a.say_and_wait(b, "sync").await;
    }

    let before = link_messages(&specs, secret).await;
    for round in 0..MESSAGES_EACH {
        for i in 0..total {
            let to = users[(i + 1) % total].uid().to_owned();
            users[i].send_line(&format!("{to}:m{round}")).await;
        }
    }
    for i in 0..total {
        let from = users[i].tag();
        let to = (i + 1) % total;
        for round in 0..MESSAGES_EACH {
            users[to]
                .expect_line(format!("{from} -> you: m{round}").as_str())
                .await;
        }
    }
    let after = link_messages(&specs, secret).await;
    (after - before) as f64 / (total * MESSAGES_EACH) as f64
}

/// Messages on every worker link of every gateway, both directions, acks aside.
async fn link_messages(specs: &[GatewaySpec], secret: &str) -> u64 {
    let mut sum = 0;
    for spec in specs {
        let stats = gateway_stats(spec.worker, secret)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Acks are cumulative, so how many there are depends on how events happen to batch:
        // not a routing cost, and not counted.
        sum += stats.link_in + stats.link_out - stats.link_acks;
    }
    sum
}

fn pair(users: &mut [TelnetUser], a: usize, b: usize) -> (&mut TelnetUser, &mut TelnetUser) {
    assert_ne!(a, b);
    if a < b {
        let (left, right) = users.split_at_mut(b);
        (&mut left[a], &mut right[0])
    } else {
        let (left, right) = users.split_at_mut(a);
        (&mut right[0], &mut left[b])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_message_costs_the_same_with_1_2_and_4_gateways() {
    let mut table = Vec::new();
    for gateways in [1u16, 2, 4] {
        // Two independent farms at once: each is mostly waiting for processes to start.
        let (targeted, everywhere) =
            tokio::join!(cost(gateways, "targeted"), cost(gateways, "everywhere"));
        table.push((gateways, targeted, everywhere));
    }
    println!(
        "internal messages per private message (events + commands + queries + replies; acks aside):"
    );
    println!("gateways  targeted  everywhere (GatewayWorker's fan-out)");
    for (gateways, targeted, everywhere) in &table {
        println!("{gateways:>8}  {targeted:>8.2}  {everywhere:>10.2}");
    }
    let (_, one, _) = table[0];
    for &(gateways, targeted, everywhere) in &table {
        assert!(
            (targeted - one).abs() < 0.01,
            "targeted routing costs {targeted:.2} with {gateways} gateways, {one:.2} with one"
        );
        if gateways > 1 {
            assert!(
                everywhere >= targeted + f64::from(gateways) - 1.0,
                "with {gateways} gateways fan-out should cost at least {} more, got {everywhere:.2} vs {targeted:.2}",
                gateways - 1
            );
        }
    }
}
