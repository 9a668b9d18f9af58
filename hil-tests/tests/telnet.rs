//! What real telnet clients send: option negotiation, either line ending, over-long lines,
//! bytes that are not UTF-8. None of it may hurt the sender, the others, or the processes.

use hil::harness::{nickname_prompt, Cluster, Matcher};

#[tokio::test]
async fn telnet_negotiation_is_stripped() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;

    // A client that negotiates before typing its nickname.
    let mut bob = c.connect("bob").await;
    bob.send_raw(b"\xff\xfd\x03\xff\xfb\x01").await;
    bob.login("bob").await;
    alice.expect_line(format!("* {} joined", bob.tag())).await;

    // ... and in the middle of a line (DO SGA, WILL ECHO, a subnegotiation).
    bob.send_raw(
        b"\xff\xfd\x03\xff\xfb\x01hel\xff\xfb\x01lo\xff\xfa\x18\x00xterm\xff\xf0 there\r\n",
    )
    .await;
    alice
        .expect_line(format!("{}: hello there", bob.tag()))
        .await;
}

#[tokio::test]
async fn crlf_and_lf_both_end_a_line() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    alice.send_raw(b"one\r\n").await;
    alice.send_raw(b"two\n").await;
    alice.send_raw(b"three\r\nfour\nfive\r\n").await;
    for text in ["one", "two", "three", "four", "five"] {
        let skipped = bob
            .expect_line(format!("{}: {text}", alice.tag()))
            .await
            .skipped;
        assert!(
            skipped.iter().all(|l| !l.starts_with(&alice.tag())),
            "lines out of order or mangled: {skipped:?}\n{}",
            bob.history()
        );
    }
}

#[tokio::test]
async fn an_overlong_line_is_refused_and_the_connection_carries_on() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;

    let mut long = vec![b'x'; 5000];
    long.extend_from_slice(b"\r\n");
    alice.send_raw(&long).await;
    alice.expect_line(Matcher::starts_with("!")).await;

    let before = alice.say_and_wait(&mut bob, "still here").await;
    assert!(
        before.iter().all(|l| !l.contains("xxxxxxxx")),
        "bob got (part of) the refused line\n{}",
        bob.history()
    );
    bob.say_and_wait(&mut alice, "me too").await;
    c.assert_alive();
}

#[tokio::test]
async fn invalid_utf8_crashes_nothing() {
    let mut c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;

    alice.send_raw(b"bad \xc3\x28 \x80\xfe\xc0 end\r\n").await;
    let line = bob
        .expect_line(Matcher::starts_with(&format!("{}: bad ", alice.tag())))
        .await
        .line;
    assert!(line.ends_with(" end"), "mangled line: {line:?}");

    // A nickname that is not UTF-8 either.
    let mut mallory = c.connect("mallory").await;
    mallory.expect_prompt(nickname_prompt()).await;
    mallory.send_raw(b"m\xc3\x28llory\xfe\r\n").await;
    mallory
        .expect_line(Matcher::starts_with("* welcome "))
        .await;

    c.assert_alive();
    alice.say_and_wait(&mut bob, "still chatting").await;
    bob.say_and_wait(&mut alice, "yes we are").await;
}
