//! The chat contract between telnet users, line by line, against the real gateway and
//! worker binaries over real sockets.
//!
//! "X does not get a line" is checked without sleeping: after the event under test, a later
//! message travels the same path, and X's lines up to it must not contain the line.

use hil::harness::{Cluster, Matcher};

#[tokio::test]
async fn greeting_welcome_and_join_announcements() {
    let c = Cluster::start().await;
    let mut alice = c.connect("alice").await;
    // `login` checks the prompt mentions the nickname and parses the welcome line.
    let a = alice.login("alice").await;
    let mut bob = c.user("bob").await;
    let b = bob.uid().to_owned();

    for uid in [&a, &b] {
        assert!(
            !uid.is_empty() && uid.len() <= 6 && uid.bytes().all(|c| c.is_ascii_digit()),
            "human uids are short numbers, got {uid:?}"
        );
    }
    assert_ne!(a, b, "uids are unique");
    alice.expect_line(format!("* bob ({b}) joined")).await;

    // Nobody is told about their own join.
    let before = alice.say_and_wait(&mut bob, "hi bob").await;
    bob.assert_not_among(&before, "joined");
    let before = bob.say_and_wait(&mut alice, "hi alice").await;
    alice.assert_not_among(&before, "* alice");
}

#[tokio::test]
async fn a_plain_line_reaches_everyone_but_the_sender() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    let mut carol = c.user("carol").await;

    alice.send_line("hello everyone").await;
    let said = format!("{}: hello everyone", alice.tag());
    bob.expect_line(said.as_str()).await;
    carol.expect_line(said.as_str()).await;

    let before = bob.say_and_wait(&mut alice, "marker").await;
    alice.assert_not_among(&before, "hello everyone");
}

#[tokio::test]
async fn uid_colon_text_is_private() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    let mut carol = c.user("carol").await;

    alice.send_line(&format!("{}:psst, bob", bob.uid())).await;
    bob.expect_line(format!("{} -> you: psst, bob", alice.tag()))
        .await;

    // Carol, a third user, sees the next public line but never the private one.
    let before = alice.say_and_wait(&mut carol, "public again").await;
    carol.assert_not_among(&before, "psst");
    // Nor does the sender get her own private line back as a public one.
    let before = bob.say_and_wait(&mut alice, "marker").await;
    alice.assert_not_among(&before, "psst");
}

#[tokio::test]
async fn private_message_to_an_unknown_uid_is_refused() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let mut bob = c.user("bob").await;
    alice.send_line("987654:anyone there?").await;
    alice.expect_line("! no such uid: 987654").await;
    // The failed private line must not leak to the others as a public line.
    let before = alice.say_and_wait(&mut bob, "marker").await;
    bob.assert_not_among(&before, "anyone there");
}

#[tokio::test]
async fn who_lists_users_and_help_lists_commands() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let bob = c.user("bob").await;
    let (a, b) = (alice.uid().to_owned(), bob.uid().to_owned());

    alice.send_line("/who").await;
    let mut missing = vec![("alice", a), ("bob", b)];
    while !missing.is_empty() {
        let found = alice
            .expect_line(Matcher::pred("a /who line for alice or bob", |l| {
                l.contains("alice") || l.contains("bob")
            }))
            .await;
        let line = found.line;
        missing.retain(|(nick, uid)| {
            let listed = line.contains(nick)
                && line
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == uid)
                && line.contains("user");
            !listed
        });
    }

    alice.send_line("/help").await;
    alice.expect_line(Matcher::contains("/who")).await;
    alice.expect_line(Matcher::contains("/help")).await;
}

#[tokio::test]
async fn leaving_is_announced() {
    let c = Cluster::start().await;
    let mut alice = c.user("alice").await;
    let bob = c.user("bob").await;
    let tag = bob.tag();
    drop(bob);
    alice.expect_line(format!("* {tag} left")).await;
}
