//! `fsm-relay` over real HTTP on loopback: the protocol, each fault, token
//! expiry and the relay's bounded life. Every relay binds 127.0.0.1 with a
//! port the OS picks and stops when its test ends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use fsm_examples::protocol::{
    LOGIN_PATH, LoginResponse, Messages, PULL_PATH, PUSH_PATH, UmhMessage, bearer,
};
use fsm_examples::relay::{
    Fault, FaultKind, RandomFaults, Relay, RelayConfig, RelayHandle, StopReason, Target,
};
use reqwest::StatusCode;

const TOKEN: &str = "the-auth-token";
const UUID: &str = "instance-1";

fn config() -> RelayConfig {
    let mut config = RelayConfig::new(TOKEN, UUID);
    config.max_requests = Some(1_000);
    config.lifetime = Some(Duration::from_secs(600));
    config
}

async fn start(config: RelayConfig) -> RelayHandle {
    Relay::start(config).await.expect("the relay starts")
}

fn client() -> reqwest::Client {
    // No idle connections: nothing left open (or timed) between requests.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

fn message(content: &str) -> UmhMessage {
    UmhMessage {
        umh_instance: UUID.to_owned(),
        content: content.to_owned(),
        email: "a@example.com".to_owned(),
        trace_id: None,
    }
}

fn messages(contents: &[&str]) -> Vec<UmhMessage> {
    contents.iter().map(|c| message(c)).collect()
}

async fn login_with(relay: &RelayHandle, auth_token: &str) -> reqwest::Response {
    client()
        .post(format!("{}{LOGIN_PATH}", relay.url()))
        .header("Authorization", format!("Bearer {}", bearer(auth_token)))
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap()
}

/// The JWT of the `token` cookie, if the answer sets one.
fn token_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?;
            pair.strip_prefix("token=").map(str::to_owned)
        })
}

async fn login(relay: &RelayHandle) -> String {
    let response = login_with(relay, TOKEN).await;
    assert_eq!(response.status(), StatusCode::OK);
    token_cookie(&response).expect("a token cookie")
}

async fn pull(relay: &RelayHandle, jwt: &str) -> reqwest::Result<reqwest::Response> {
    client()
        .get(format!("{}{PULL_PATH}", relay.url()))
        .header("Cookie", format!("token={jwt}"))
        .send()
        .await
}

async fn push(relay: &RelayHandle, jwt: &str, body: Vec<u8>) -> reqwest::Result<reqwest::Response> {
    client()
        .post(format!("{}{PUSH_PATH}", relay.url()))
        .header("Cookie", format!("token={jwt}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
}

fn push_body(contents: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&Messages {
        messages: messages(contents),
    })
    .unwrap()
}

async fn pulled(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), StatusCode::OK);
    let body: Messages = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    body.messages.into_iter().map(|m| m.content).collect()
}

/// A relay whose instance uuid says which test it belongs to: once it
/// stopped, another test's relay may get its port.
fn config_for(uuid: &str) -> RelayConfig {
    let mut config = config();
    config.instance_uuid = uuid.to_owned();
    config
}

/// Whether the relay of instance `uuid` still answers a login at `addr`.
async fn serves(addr: std::net::SocketAddr, uuid: &str) -> bool {
    let answer = client()
        .post(format!("http://{addr}{LOGIN_PATH}"))
        .header("Authorization", format!("Bearer {}", bearer(TOKEN)))
        .send()
        .await;
    match answer {
        Ok(response) if response.status() == StatusCode::OK => response
            .bytes()
            .await
            .ok()
            .and_then(|body| serde_json::from_slice::<LoginResponse>(&body).ok())
            .is_some_and(|login| login.uuid == uuid),
        _ => false,
    }
}

fn base64url_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => panic!("not base64url: {c}"),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_login_with_the_right_bearer_gets_the_instance_and_a_jwt_cookie() {
    let mut config = config();
    config.instance_name = "line-7".to_owned();
    config.token_lifetime = Duration::from_secs(3600);
    let relay = start(config).await;
    let response = login_with(&relay, TOKEN).await;
    assert_eq!(response.status(), StatusCode::OK);
    let jwt = token_cookie(&response).expect("a token cookie");
    let body: LoginResponse = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        LoginResponse {
            uuid: UUID.to_owned(),
            name: "line-7".to_owned()
        }
    );
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a three-part JWT: {jwt}");
    let header: serde_json::Value = serde_json::from_slice(&base64url_decode(parts[0])).unwrap();
    assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    let payload: serde_json::Value = serde_json::from_slice(&base64url_decode(parts[1])).unwrap();
    assert_eq!(payload["sub"], UUID);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = payload["exp"].as_u64().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&exp),
        "exp {exp} is now + 1 h"
    );
    assert!(!parts[2].is_empty());
    // Each login issues its own token.
    assert_ne!(login(&relay).await, jwt);
    assert_eq!(relay.stats().logins, 2);
}

#[tokio::test]
async fn a_login_with_a_wrong_or_missing_bearer_gets_401_and_no_cookie() {
    let relay = start(config()).await;
    let wrong = login_with(&relay, "another-token").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(token_cookie(&wrong), None);
    // The raw token instead of its hash is wrong too.
    let raw = client()
        .post(format!("{}{LOGIN_PATH}", relay.url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::UNAUTHORIZED);
    let missing = client()
        .post(format!("{}{LOGIN_PATH}", relay.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    let stats = relay.stats();
    assert_eq!((stats.logins, stats.logins_refused), (0, 3));
}

#[tokio::test]
async fn a_deleted_instance_answers_the_login_with_404() {
    let mut config = config();
    config.deleted = true;
    let relay = start(config).await;
    let response = login_with(&relay, TOKEN).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(token_cookie(&response), None);
    // A wrong token is still 401: the instance is not revealed.
    assert_eq!(
        login_with(&relay, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    relay.set_deleted(false);
    login(&relay).await;
    relay.set_deleted(true);
    assert_eq!(
        login_with(&relay, TOKEN).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_pull_answers_204_until_messages_are_queued_then_hands_them_out_in_batches() {
    let mut config = config();
    config.pull_batch = 2;
    let relay = start(config).await;
    let jwt = login(&relay).await;
    let empty = pull(&relay, &jwt).await.unwrap();
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    assert!(empty.headers().get("content-type").is_none());
    assert!(empty.bytes().await.unwrap().is_empty());
    relay.queue_for_instance(messages(&["a", "b", "c"]));
    assert_eq!(relay.queued(), 3);
    assert_eq!(pulled(pull(&relay, &jwt).await.unwrap()).await, ["a", "b"]);
    assert_eq!(pulled(pull(&relay, &jwt).await.unwrap()).await, ["c"]);
    assert_eq!(relay.queued(), 0);
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let stats = relay.stats();
    assert_eq!((stats.pulls, stats.messages_handed_out), (4, 3));
    assert_eq!((stats.pull_responses_lost, stats.messages_lost), (0, 0));
}

#[tokio::test]
async fn pulls_and_pushes_without_a_valid_token_get_401() {
    let relay = start(config()).await;
    relay.queue_for_instance(messages(&["kept"]));
    let no_cookie = client()
        .get(format!("{}{PULL_PATH}", relay.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), StatusCode::UNAUTHORIZED);
    let forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln";
    assert_eq!(
        pull(&relay, forged).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push(&relay, forged, push_body(&["x"]))
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let jwt = login(&relay).await;
    relay.revoke_tokens();
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(relay.queued(), 1, "no refused pull takes a message");
    assert!(relay.received().is_empty());
    assert_eq!(relay.stats().unauthorized, 4);
}

#[tokio::test]
async fn pushed_messages_are_recorded_in_order_and_duplicates_counted() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    let first = push(&relay, &jwt, push_body(&["one", "two"]))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let again = push(&relay, &jwt, push_body(&["two", "three"]))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let contents: Vec<String> = relay.received().into_iter().map(|m| m.content).collect();
    assert_eq!(contents, ["one", "two", "two", "three"]);
    let stats = relay.stats();
    assert_eq!(stats.pushes, 2);
    assert_eq!(stats.messages_received, 4);
    assert_eq!(stats.duplicates_received, 1);
}

#[tokio::test]
async fn a_push_whose_body_does_not_parse_gets_400() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    let bad = push(&relay, &jwt, b"{\"messages\":[]}".to_vec())
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let garbage = push(&relay, &jwt, b"not json".to_vec()).await.unwrap();
    assert_eq!(garbage.status(), StatusCode::BAD_REQUEST);
    assert!(relay.received().is_empty());
    assert_eq!(relay.stats().pushes_malformed, 2);
}

#[tokio::test]
async fn an_injected_401_is_one_shot_and_leaves_the_token_valid() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.inject(Fault::Unauthorized);
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let stats = relay.stats();
    assert_eq!(stats.faults.get(FaultKind::Unauthorized), 1);
    assert_eq!(stats.unauthorized, 0, "the token itself was fine");
}

#[tokio::test]
async fn a_rate_limit_answers_429_with_or_without_retry_after() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.inject(Fault::RateLimited {
        retry_after_s: Some(7),
    });
    relay.inject(Fault::RateLimited {
        retry_after_s: None,
    });
    let with = pull(&relay, &jwt).await.unwrap();
    assert_eq!(with.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(with.headers()["retry-after"], "7");
    let without = pull(&relay, &jwt).await.unwrap();
    assert_eq!(without.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(without.headers().get("retry-after").is_none());
    assert_eq!(relay.stats().faults.rate_limited, 2);
}

#[tokio::test]
async fn server_errors_answer_500_and_503_without_processing() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.queue_for_instance(messages(&["m"]));
    relay.inject_on(Target::Pull, Fault::ServerError);
    relay.inject_on(Target::Push, Fault::ServiceUnavailable);
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        push(&relay, &jwt, push_body(&["p"]))
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(relay.queued(), 1);
    assert!(relay.received().is_empty());
    let faults = relay.stats().faults;
    assert_eq!((faults.server_error, faults.service_unavailable), (1, 1));
}

#[tokio::test]
async fn a_proxy_challenge_is_a_429_html_page() {
    let relay = start(config()).await;
    relay.inject_on(Target::Login, Fault::ProxyChallenge);
    let response = login_with(&relay, TOKEN).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(response.headers()["cf-mitigated"], "challenge");
    assert_eq!(token_cookie(&response), None);
    let page = response.text().await.unwrap();
    assert!(page.contains("<title>Just a moment...</title>"), "{page}");
    assert_eq!(relay.stats().logins, 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_answer_comes_after_its_delay_and_a_client_that_gave_up_loses_nothing() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.queue_for_instance(messages(&["a", "b"]));
    relay.inject(Fault::Slow(Duration::from_secs(40)));
    let began = tokio::time::Instant::now();
    let slow = pull(&relay, &jwt).await.unwrap();
    assert!(began.elapsed() >= Duration::from_secs(40));
    assert_eq!(pulled(slow).await, ["a", "b"]);

    relay.queue_for_instance(messages(&["c"]));
    relay.inject(Fault::Slow(Duration::from_secs(40)));
    let impatient = client()
        .get(format!("{}{PULL_PATH}", relay.url()))
        .header("Cookie", format!("token={jwt}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(impatient.is_err_and(|e| e.is_timeout()));
    // The relay's delay runs out long after the client left.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(relay.queued(), 1, "the abandoned pull took nothing");
    assert_eq!(relay.stats().faults.slow, 2);
}

#[tokio::test]
async fn a_reset_cuts_the_answer_midway_and_processes_nothing() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.queue_for_instance(messages(&["a", "b", "c"]));
    relay.inject(Fault::Reset);
    // The headers arrive, announcing a body that is cut halfway.
    let response = pull(&relay, &jwt).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.content_length().is_some_and(|n| n > 0));
    assert!(response.bytes().await.is_err(), "the body is cut");
    assert_eq!(relay.queued(), 3);
    assert_eq!(relay.stats().faults.reset, 1);
    assert_eq!(relay.stats().pulls, 0);
    // The next pull is whole.
    assert_eq!(
        pulled(pull(&relay, &jwt).await.unwrap()).await,
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn a_lost_pull_answer_removes_its_messages_and_counts_them_lost() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.queue_for_instance(messages(&["a", "b", "c", "d"]));
    relay.inject(Fault::ResponseLost);
    let lost = match pull(&relay, &jwt).await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(lost.is_err(), "the client never sees the answer");
    assert_eq!(relay.queued(), 0, "the messages left the queue");
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let stats = relay.stats();
    assert_eq!(stats.pull_responses_lost, 1);
    assert_eq!(stats.messages_lost, 4);
    assert_eq!(stats.messages_handed_out, 0);
    assert_eq!(stats.faults.response_lost, 1);
}

#[tokio::test]
async fn a_lost_push_answer_is_recorded_so_a_retry_is_a_duplicate() {
    let relay = start(config()).await;
    let jwt = login(&relay).await;
    relay.inject(Fault::ResponseLost);
    let lost = match push(&relay, &jwt, push_body(&["once"])).await {
        Ok(response) => response.bytes().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(lost.is_err());
    let retry = push(&relay, &jwt, push_body(&["once"])).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    let stats = relay.stats();
    assert_eq!((stats.messages_received, stats.duplicates_received), (2, 1));
    assert_eq!(stats.pull_responses_lost, 0, "not a pull");
}

#[tokio::test]
async fn a_token_expires_after_its_request_budget() {
    let mut config = config();
    config.faults.token_max_requests = Some(2);
    let relay = start(config).await;
    let jwt = login(&relay).await;
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        push(&relay, &jwt, push_body(&["x"]))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // Gone for good, not just once.
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = login(&relay).await;
    assert_eq!(
        pull(&relay, &fresh).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(relay.stats().tokens_expired, 1);
    relay.set_token_max_requests(None);
    for _ in 0..3 {
        assert_eq!(
            pull(&relay, &fresh).await.unwrap().status(),
            StatusCode::NO_CONTENT
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_expires_at_its_exp() {
    let mut config = config();
    config.token_lifetime = Duration::from_secs(60);
    let relay = start(config).await;
    let jwt = login(&relay).await;
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        pull(&relay, &jwt).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(relay.stats().tokens_expired, 1);
}

#[tokio::test]
async fn random_faults_at_rate_one_fault_every_request_from_the_mix() {
    let mut config = config();
    config.faults.random = Some(RandomFaults {
        rate: 1.0,
        seed: 7,
        mix: vec![(Fault::ServerError, 1), (Fault::ServiceUnavailable, 1)],
    });
    let relay = start(config).await;
    for _ in 0..20 {
        let status = login_with(&relay, TOKEN).await.status();
        assert!(
            status == StatusCode::INTERNAL_SERVER_ERROR
                || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
    let faults = relay.stats().faults;
    assert_eq!(faults.total(), 20);
    assert!(faults.server_error > 0 && faults.service_unavailable > 0);
    relay.set_random_faults(None);
    login(&relay).await;
}

#[tokio::test]
async fn the_relay_stops_by_itself_after_max_requests() {
    let uuid = "stops-after-max-requests";
    let mut config = config_for(uuid);
    config.max_requests = Some(3);
    let relay = start(config).await;
    for _ in 0..3 {
        assert!(
            serves(relay.addr(), uuid).await,
            "the first three are answered"
        );
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), relay.stopped())
        .await
        .expect("the relay stops");
    assert_eq!(reason, StopReason::MaxRequests);
    assert!(!relay.is_running());
    assert!(!serves(relay.addr(), uuid).await);
    assert_eq!(relay.stats().requests, 3);
}

#[tokio::test(start_paused = true)]
async fn the_relay_stops_by_itself_after_its_lifetime() {
    let uuid = "stops-after-lifetime";
    let mut config = config_for(uuid);
    config.lifetime = Some(Duration::from_secs(30));
    let relay = start(config).await;
    assert!(serves(relay.addr(), uuid).await);
    let began = tokio::time::Instant::now();
    assert_eq!(relay.stopped().await, StopReason::Lifetime);
    assert!(began.elapsed() >= Duration::from_secs(29));
    assert!(!serves(relay.addr(), uuid).await);
    assert_eq!(relay.stats().requests, 1);
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_relay() {
    let uuid = "shut-down";
    let relay = start(config_for(uuid)).await;
    let addr = relay.addr();
    assert!(serves(addr, uuid).await);
    let stats = relay.shutdown().await;
    assert_eq!(stats.logins, 1);
    assert!(!serves(addr, uuid).await);

    let uuid = "dropped";
    let relay = start(config_for(uuid)).await;
    let addr = relay.addr();
    drop(relay);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while serves(addr, uuid).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "a dropped relay stops serving");
}

/// Starts `fsm-relay` on a port the OS picks with `args`, and reads the
/// address it prints.
fn spawn_binary(
    args: &[&str],
    stderr: Stdio,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStdout>,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fsm-relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auth-token",
            TOKEN,
            "--instance-uuid",
            UUID,
            "--lifetime-s",
            "60",
        ])
        .args(args)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    (child, stdout, addr)
}

#[test]
fn the_binary_never_logs_the_auth_token_the_bearer_or_a_jwt_even_at_trace_level() {
    let (child, _stdout, addr) = spawn_binary(
        &[
            "--queue",
            "2",
            "--max-requests",
            "5",
            "--fault",
            "response-lost",
        ],
        Stdio::piped(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let jwt = runtime.block_on(async {
        let http = client();
        let login = |token: &'static str| {
            http.post(format!("http://{addr}{LOGIN_PATH}"))
                .header("Authorization", format!("Bearer {}", bearer(token)))
                .send()
        };
        let jwt = token_cookie(&login(TOKEN).await.unwrap()).unwrap();
        // Lost after dequeue, then a push, a wrong login and a pull.
        let lost = http
            .get(format!("http://{addr}{PULL_PATH}"))
            .header("Cookie", format!("token={jwt}"))
            .send()
            .await;
        let _ = match lost {
            Ok(response) => response.bytes().await.map(|_| ()),
            Err(e) => Err(e),
        };
        http.post(format!("http://{addr}{PUSH_PATH}"))
            .header("Cookie", format!("token={jwt}"))
            .body(push_body(&["p"]))
            .send()
            .await
            .unwrap();
        login("wrong").await.unwrap();
        http.get(format!("http://{addr}{PULL_PATH}"))
            .header("Cookie", format!("token={jwt}"))
            .send()
            .await
            .unwrap();
        jwt
    });
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("relay answers"), "trace logs are on: {logs}");
    assert!(logs.contains("ResponseLost"), "{logs}");
    for secret in [
        TOKEN.to_owned(),
        bearer(TOKEN),
        bearer("wrong"),
        jwt.clone(),
    ] {
        assert!(!logs.contains(&secret), "a secret was logged: {logs}");
    }
    // Not even the JWT's payload or signature alone.
    for part in jwt.split('.').skip(1) {
        assert!(!logs.contains(part), "part of a JWT was logged: {logs}");
    }
}

#[test]
fn the_binary_prints_its_address_then_its_stats_when_it_stops() {
    let (mut child, mut stdout, addr) =
        spawn_binary(&["--queue", "3", "--max-requests", "2"], Stdio::null());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let contents = runtime.block_on(async {
        let http = client();
        let login = http
            .post(format!("http://{addr}{LOGIN_PATH}"))
            .header("Authorization", format!("Bearer {}", bearer(TOKEN)))
            .send()
            .await
            .unwrap();
        let jwt = token_cookie(&login).unwrap();
        let response = http
            .get(format!("http://{addr}{PULL_PATH}"))
            .header("Cookie", format!("token={jwt}"))
            .send()
            .await
            .unwrap();
        pulled(response).await
    });
    assert_eq!(contents, ["msg-0", "msg-1", "msg-2"]);
    let mut last = String::new();
    stdout.read_line(&mut last).unwrap();
    let stats: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(stats["logins"], 1);
    assert_eq!(stats["messages_handed_out"], 3);
    assert!(child.wait().unwrap().success());
}

#[test]
fn the_binary_refuses_a_public_address_without_public() {
    let output = Command::new(env!("CARGO_BIN_EXE_fsm-relay"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--auth-token",
            TOKEN,
            "--instance-uuid",
            UUID,
            "--max-requests",
            "1",
            "--lifetime-s",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "it never listened");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
