//! The relay's HTTP client: login, pull and push (see
//! [`protocol`](crate::protocol)), with every failure classified into a
//! [`RelayError`] and its delay from [`delay`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use fsm_core::{Backoff, Secret};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, RETRY_AFTER, SET_COOKIE};
use tokio::sync::Semaphore;

use crate::protocol::{
    LOGIN_PATH, LoginResponse, Messages, PULL_PATH, PUSH_PATH, TOKEN_COOKIE, UmhMessage, bearer,
};

/// At most this many requests to the relay at once (the Go client's limit
/// of connections per host).
pub const MAX_CONNECTIONS: usize = 2;

/// An authenticated session: what a login returns. Its `Debug` prints the
/// JWT as `<redacted>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The instance's uuid, as the relay knows it.
    pub uuid: String,
    /// The instance's name.
    pub name: String,
    /// The JWT the relay set in its `token` cookie.
    pub jwt: Secret,
    /// When the JWT expires (its `exp`), if it says.
    pub expires_at: Option<SystemTime>,
}

/// The class of a relay error: what decides its delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 429 from the relay.
    RateLimited,
    /// 429 with a challenge page from a proxy or CDN in front of the relay.
    ProxyRateLimited,
    /// A block page from a (corporate) proxy.
    ProxyBlocked,
    /// 401 or 403: the token (auth token or JWT) is not accepted.
    InvalidToken,
    /// 404: the relay does not know this instance.
    InstanceDeleted,
    /// A status of 500 or more.
    Server,
    /// Connecting, a timeout, a reset connection.
    Network,
    /// Any other 4xx: the request itself is refused, for good.
    Rejected,
}

impl ErrorClass {
    /// The class's name, for metrics and logs (`rate_limited`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::ProxyRateLimited => "proxy_rate_limited",
            Self::ProxyBlocked => "proxy_blocked",
            Self::InvalidToken => "invalid_token",
            Self::InstanceDeleted => "instance_deleted",
            Self::Server => "server",
            Self::Network => "network",
            Self::Rejected => "rejected",
        }
    }

    /// Whether a request that failed this way may have reached the relay
    /// and been acted on (a push retried after it may be a duplicate).
    #[must_use]
    pub fn may_have_arrived(self) -> bool {
        matches!(self, Self::Server | Self::Network)
    }
}

/// Why a call to the relay failed. None of them carries the auth token or
/// the JWT.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// 429 from the relay.
    #[error("the relay rate-limits this instance (429); retrying later")]
    RateLimited {
        /// The relay's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 429 with a challenge page from a proxy or CDN in front of the relay.
    #[error(
        "a proxy in front of the relay rate-limits this instance (429 with a challenge page); retrying later"
    )]
    ProxyRateLimited {
        /// The proxy's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// A block page from a proxy between the instance and the relay.
    #[error("a proxy blocks the relay (status {status}); allow the relay's address in the proxy")]
    ProxyBlocked {
        /// The status of the block page.
        status: u16,
        /// The proxy's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 401 or 403.
    #[error("the relay refuses the token (status {status}); check the instance's auth token")]
    InvalidToken {
        /// 401 or 403.
        status: u16,
        /// The relay's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// 404: the relay does not know the instance.
    #[error(
        "the relay does not know this instance (404): it was deleted, or the relay URL is wrong"
    )]
    InstanceDeleted {
        /// The relay's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// A status of 500 or more, or an answer that does not parse.
    #[error("the relay failed (status {status}); retrying")]
    Server {
        /// The status (200 for a body that does not parse).
        status: u16,
        /// The relay's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The relay could not be reached, or did not answer in time.
    #[error("the relay is unreachable: {reason}; retrying")]
    Network {
        /// What went wrong.
        reason: String,
    },
    /// Any other 4xx (or a request that cannot be built): refused for good.
    #[error("the relay rejects the request (status {status:?}); it is not retried")]
    Rejected {
        /// The status, if the request was sent.
        status: Option<u16>,
        /// The relay's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
}

impl RelayError {
    /// The error's class.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::RateLimited { .. } => ErrorClass::RateLimited,
            Self::ProxyRateLimited { .. } => ErrorClass::ProxyRateLimited,
            Self::ProxyBlocked { .. } => ErrorClass::ProxyBlocked,
            Self::InvalidToken { .. } => ErrorClass::InvalidToken,
            Self::InstanceDeleted { .. } => ErrorClass::InstanceDeleted,
            Self::Server { .. } => ErrorClass::Server,
            Self::Network { .. } => ErrorClass::Network,
            Self::Rejected { .. } => ErrorClass::Rejected,
        }
    }

    /// The `Retry-After` the answer carried, if any.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after }
            | Self::ProxyRateLimited { retry_after }
            | Self::ProxyBlocked { retry_after, .. }
            | Self::InvalidToken { retry_after, .. }
            | Self::InstanceDeleted { retry_after }
            | Self::Server { retry_after, .. }
            | Self::Rejected { retry_after, .. } => *retry_after,
            Self::Network { .. } => None,
        }
    }

    /// The wait before attempt `attempt` (0 for the first retry) after
    /// this error: `Retry-After` when the answer had one, else [`delay`].
    #[must_use]
    pub fn delay(&self, attempt: u32, delays: &Delays) -> Duration {
        self.retry_after()
            .unwrap_or_else(|| delay(self.class(), attempt, delays))
    }
}

/// The waits after each class of error. The defaults are the relay's
/// protocol; tests shrink them to milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Delays {
    /// After a 429, one wait per attempt; the last repeats.
    pub rate_limit: Vec<Duration>,
    /// After a server or network error: doubling from `base` up to `max`.
    pub transient: Backoff,
    /// After 401/403.
    pub invalid_token: Duration,
    /// After 404.
    pub instance_deleted: Duration,
    /// After a proxy's rate limit or block page.
    pub proxy: Duration,
    /// After a request rejected for good (only a login can be retried).
    pub rejected: Duration,
}

impl Default for Delays {
    /// 429: 30, 60, 120, then 300 s; ≥ 500 and network: 2^n s capped at
    /// 60 s; 401/403: 60 s; 404: 5 min; proxy: 60 s; other 4xx: 60 s.
    fn default() -> Self {
        Self {
            rate_limit: [30, 60, 120, 300]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            transient: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
                jitter: 0.0,
                reset_after: Duration::ZERO,
            },
            invalid_token: Duration::from_secs(60),
            instance_deleted: Duration::from_secs(300),
            proxy: Duration::from_secs(60),
            rejected: Duration::from_secs(60),
        }
    }
}

impl Delays {
    /// Every delay divided by `factor` (at least 1): the protocol's delays
    /// on a faster clock, for tests and demos.
    #[must_use]
    pub fn scaled_down(&self, factor: u32) -> Self {
        let f = factor.max(1);
        Self {
            rate_limit: self.rate_limit.iter().map(|d| *d / f).collect(),
            transient: Backoff {
                base: self.transient.base / f,
                max: self.transient.max / f,
                ..self.transient
            },
            invalid_token: self.invalid_token / f,
            instance_deleted: self.instance_deleted / f,
            proxy: self.proxy / f,
            rejected: self.rejected / f,
        }
    }
}

/// The wait before attempt `attempt` (0 for the first retry) after an error
/// of class `class`, without a `Retry-After` (which overrides it: see
/// [`RelayError::delay`]).
///
/// ```
/// use std::time::Duration;
/// use fsm_examples::communicator::client::{delay, Delays, ErrorClass};
///
/// let d = Delays::default();
/// assert_eq!(delay(ErrorClass::RateLimited, 3, &d), Duration::from_secs(300));
/// assert_eq!(delay(ErrorClass::Network, 10, &d), Duration::from_secs(60));
/// ```
#[must_use]
pub fn delay(class: ErrorClass, attempt: u32, delays: &Delays) -> Duration {
    match class {
        ErrorClass::RateLimited => {
            let i = usize::try_from(attempt).unwrap_or(usize::MAX);
            delays
                .rate_limit
                .get(i)
                .or_else(|| delays.rate_limit.last())
                .copied()
                .unwrap_or(Duration::ZERO)
        }
        ErrorClass::Server | ErrorClass::Network => delays.transient.delay(attempt, 0.0),
        ErrorClass::InvalidToken => delays.invalid_token,
        ErrorClass::InstanceDeleted => delays.instance_deleted,
        ErrorClass::ProxyRateLimited | ErrorClass::ProxyBlocked => delays.proxy,
        ErrorClass::Rejected => delays.rejected,
    }
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (a
/// date in the past is no wait). `None` when it is neither.
#[must_use]
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Words of the block pages corporate proxies serve.
const BLOCK_MARKERS: [&str; 8] = [
    "access denied",
    "blocked",
    "zscaler",
    "forcepoint",
    "websense",
    "bluecoat",
    "fortiguard",
    "web filter",
];

/// Words of the challenge pages CDNs serve with a 429.
const CHALLENGE_MARKERS: [&str; 5] = [
    "cf-chl",
    "challenge",
    "captcha",
    "just a moment",
    "attention required",
];

fn looks_like_html(body: &str) -> bool {
    let head: String = body
        .trim_start()
        .chars()
        .take(64)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// Classifies an answer of status `status` with body `body` and the
/// `Retry-After` header `retry_after` (read at `now`): `None` for a success
/// (2xx, or any status below 400 that is not a block page), else the
/// error.
#[must_use]
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
    now: SystemTime,
) -> Option<RelayError> {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    let html = looks_like_html(body);
    let lower = if html {
        body.to_ascii_lowercase()
    } else {
        String::new()
    };
    let has = |markers: &[&str]| markers.iter().any(|m| lower.contains(m));
    if status == 429 {
        return Some(
            if html && (has(&CHALLENGE_MARKERS) || !has(&BLOCK_MARKERS)) {
                RelayError::ProxyRateLimited { retry_after }
            } else if html {
                RelayError::ProxyBlocked {
                    status,
                    retry_after,
                }
            } else {
                RelayError::RateLimited { retry_after }
            },
        );
    }
    // The relay answers in JSON or plain text: an HTML page that speaks of
    // a block comes from a proxy, whatever its status.
    if html && has(&BLOCK_MARKERS) {
        return Some(RelayError::ProxyBlocked {
            status,
            retry_after,
        });
    }
    match status {
        0..=399 => None,
        401 | 403 => Some(RelayError::InvalidToken {
            status,
            retry_after,
        }),
        404 => Some(RelayError::InstanceDeleted { retry_after }),
        400..=499 => Some(RelayError::Rejected {
            status: Some(status),
            retry_after,
        }),
        _ => Some(RelayError::Server {
            status,
            retry_after,
        }),
    }
}

/// The `exp` of a JWT (seconds since the epoch), read from its payload
/// without checking its signature (the relay checks it; the instance only
/// needs to know when to log in again).
#[must_use]
pub fn jwt_expiry(jwt: &str) -> Option<SystemTime> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?;
    let seconds = exp
        .as_u64()
        .or_else(|| exp.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// The JWT in the `token` cookie among `Set-Cookie` headers, if any.
fn token_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|cookie| {
            let first = cookie.split(';').next()?.trim();
            let (name, value) = first.split_once('=')?;
            (name.trim() == TOKEN_COOKIE && !value.trim().is_empty())
                .then(|| value.trim().to_owned())
        })
}

/// The relay's HTTP client: HTTP/1 only, every request bounded by the
/// timeout, at most [`MAX_CONNECTIONS`] requests at once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RelayClient {
    http: reqwest::Client,
    base: String,
    permits: Arc<Semaphore>,
}

impl RelayClient {
    /// A client for the relay at `base_url` (`http://host:port`, or
    /// `https://` with the `tls` feature), each request bounded by
    /// `timeout`. With `tls`, the first client installs rustls' `ring`
    /// provider as the process's default, unless one is installed already.
    ///
    /// # Errors
    ///
    /// [`RelayError::Rejected`] when the HTTP client cannot be built.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, RelayError> {
        // rustls uses the process's crypto provider: the application's, if
        // it installed one, else `ring` (reqwest would panic without one).
        #[cfg(feature = "tls")]
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Another thread may install one meanwhile: then that one is
            // used, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .http1_only()
            .pool_max_idle_per_host(MAX_CONNECTIONS)
            .build()
            .map_err(|_| RelayError::Rejected {
                status: None,
                retry_after: None,
            })?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// The relay's base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Logs in with `auth_token`.
    ///
    /// # Errors
    ///
    /// The classified failure; a 200 without a `token` cookie is
    /// [`RelayError::InvalidToken`].
    pub async fn login(&self, auth_token: &Secret) -> Result<Session, RelayError> {
        let request = self
            .http
            .post(format!("{}{LOGIN_PATH}", self.base))
            .header(
                AUTHORIZATION,
                format!("Bearer {}", bearer(auth_token.expose())),
            )
            .header(CONTENT_TYPE, "application/json");
        let (status, headers, body) = self.send(request).await?;
        let Some(jwt) = token_cookie(&headers) else {
            return Err(RelayError::InvalidToken {
                status,
                retry_after: None,
            });
        };
        let login: LoginResponse =
            serde_json::from_slice(&body).map_err(|_| RelayError::Server {
                status,
                retry_after: None,
            })?;
        Ok(Session {
            uuid: login.uuid,
            name: login.name,
            expires_at: jwt_expiry(&jwt),
            jwt: Secret::new(jwt),
        })
    }

    /// Pulls the messages waiting for the instance (the relay removes them
    /// from its queue).
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn pull(&self, session: &Session) -> Result<Vec<UmhMessage>, RelayError> {
        let request = self
            .http
            .get(format!("{}{PULL_PATH}", self.base))
            .header(COOKIE, format!("{TOKEN_COOKIE}={}", session.jwt.expose()));
        let (status, _, body) = self.send(request).await?;
        if status == 204 || body.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_slice::<Messages>(&body)
            .map(|m| m.messages)
            .map_err(|_| RelayError::Server {
                status,
                retry_after: None,
            })
    }

    /// Pushes `messages`, each with `umhInstance` set to the session's uuid.
    ///
    /// # Errors
    ///
    /// The classified failure.
    pub async fn push(&self, session: &Session, messages: &[UmhMessage]) -> Result<(), RelayError> {
        let body = Messages {
            messages: messages
                .iter()
                .map(|m| UmhMessage {
                    umh_instance: session.uuid.clone(),
                    ..m.clone()
                })
                .collect(),
        };
        let body = serde_json::to_vec(&body).map_err(|_| RelayError::Rejected {
            status: None,
            retry_after: None,
        })?;
        let request = self
            .http
            .post(format!("{}{PUSH_PATH}", self.base))
            .header(COOKIE, format!("{TOKEN_COOKIE}={}", session.jwt.expose()))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await.map(|_| ())
    }

    /// Sends `request` (one of at most [`MAX_CONNECTIONS`] at once) and
    /// reads the whole answer; a failure status is classified.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, HeaderMap, Vec<u8>), RelayError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RelayError::Network {
                reason: "the client is closed".to_owned(),
            })?;
        let response = request.send().await.map_err(network)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(network)?;
        let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        let text = String::from_utf8_lossy(&body);
        match classify(status, retry_after, &text, SystemTime::now()) {
            Some(error) => Err(error),
            None => Ok((status, headers, body.to_vec())),
        }
    }
}

/// A transport failure as a [`RelayError::Network`] (or `Rejected` for a
/// request that cannot be built, such as a malformed URL).
fn network(error: reqwest::Error) -> RelayError {
    if error.is_builder() {
        return RelayError::Rejected {
            status: None,
            retry_after: None,
        };
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the connection failed"
    };
    // The source chain says why (refused, reset, ...); no URL, no header.
    let mut reason = kind.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        reason.push_str(": ");
        reason.push_str(&cause.to_string());
        source = cause.source();
    }
    RelayError::Network { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        assert_eq!(
            parse_retry_after(" 120 ", now()),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now()),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now() - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-5", now()), None);
    }

    #[test]
    fn answers_are_classified_by_status_body_and_headers() {
        let c = |status, body| classify(status, None, body, now()).map(|e| e.class());
        assert_eq!(c(200, "{}"), None);
        assert_eq!(c(204, ""), None);
        assert_eq!(c(429, "slow down"), Some(ErrorClass::RateLimited));
        assert_eq!(
            c(429, "<!DOCTYPE html><title>Just a moment...</title>"),
            Some(ErrorClass::ProxyRateLimited)
        );
        assert_eq!(
            c(403, "<html><body>Access denied by Zscaler</body></html>"),
            Some(ErrorClass::ProxyBlocked)
        );
        assert_eq!(
            c(200, "<html><body>This site is blocked</body></html>"),
            Some(ErrorClass::ProxyBlocked)
        );
        assert_eq!(c(401, ""), Some(ErrorClass::InvalidToken));
        assert_eq!(c(403, "forbidden"), Some(ErrorClass::InvalidToken));
        assert_eq!(c(404, ""), Some(ErrorClass::InstanceDeleted));
        assert_eq!(c(400, "bad"), Some(ErrorClass::Rejected));
        assert_eq!(c(413, ""), Some(ErrorClass::Rejected));
        assert_eq!(c(500, ""), Some(ErrorClass::Server));
        assert_eq!(c(503, "<html>unavailable</html>"), Some(ErrorClass::Server));
        let with_header = classify(429, Some("7"), "", now());
        assert_eq!(
            with_header,
            Some(RelayError::RateLimited {
                retry_after: Some(Duration::from_secs(7))
            })
        );
    }

    #[test]
    fn the_delay_table_follows_the_protocol() {
        let d = Delays::default();
        let s = Duration::from_secs;
        let rl: Vec<_> = (0..6)
            .map(|a| delay(ErrorClass::RateLimited, a, &d))
            .collect();
        assert_eq!(rl, [s(30), s(60), s(120), s(300), s(300), s(300)]);
        for class in [ErrorClass::Server, ErrorClass::Network] {
            let t: Vec<_> = (0..8).map(|a| delay(class, a, &d)).collect();
            assert_eq!(t, [s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)]);
            assert_eq!(delay(class, u32::MAX, &d), s(60));
        }
        assert_eq!(delay(ErrorClass::InvalidToken, 0, &d), s(60));
        assert_eq!(delay(ErrorClass::InstanceDeleted, 4, &d), s(300));
        assert_eq!(delay(ErrorClass::ProxyRateLimited, 2, &d), s(60));
        assert_eq!(delay(ErrorClass::ProxyBlocked, 0, &d), s(60));
        let fast = d.scaled_down(1000);
        assert_eq!(
            delay(ErrorClass::RateLimited, 9, &fast),
            Duration::from_millis(300)
        );
        assert_eq!(
            delay(ErrorClass::Network, 1, &fast),
            Duration::from_millis(2)
        );
    }

    #[test]
    fn retry_after_overrides_every_other_delay() {
        let d = Delays::default();
        let five = Some(Duration::from_secs(5));
        for error in [
            RelayError::RateLimited { retry_after: five },
            RelayError::ProxyRateLimited { retry_after: five },
            RelayError::InvalidToken {
                status: 401,
                retry_after: five,
            },
            RelayError::InstanceDeleted { retry_after: five },
            RelayError::Server {
                status: 503,
                retry_after: five,
            },
        ] {
            assert_eq!(error.delay(3, &d), Duration::from_secs(5), "{error:?}");
        }
        let none = RelayError::Server {
            status: 503,
            retry_after: None,
        };
        assert_eq!(none.delay(3, &d), Duration::from_secs(8));
    }

    fn jwt_with(payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            b64.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            b64.encode(payload)
        )
    }

    #[test]
    fn the_jwt_expiry_is_read_from_its_payload() {
        assert_eq!(
            jwt_expiry(&jwt_with(r#"{"sub":"x","exp":1700000123}"#)),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_123))
        );
        assert_eq!(jwt_expiry(&jwt_with(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry("a.!!!.c"), None);
    }

    #[test]
    fn the_token_cookie_is_found_among_set_cookie_headers() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            "other=1; Path=/".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token_cookie(&headers), None);
        headers.append(
            SET_COOKIE,
            "token=abc.def.ghi; HttpOnly; Path=/"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token_cookie(&headers).as_deref(), Some("abc.def.ghi"));
        let mut empty = HeaderMap::new();
        empty.append(
            SET_COOKIE,
            "token=; Path=/".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(token_cookie(&empty), None);
    }

    /// With `tls`, an `https://` relay is spoken to in TLS (the provider
    /// installed without cmake): the first bytes the relay gets are a TLS
    /// handshake record, and a relay that hangs up is a network failure.
    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn an_https_relay_gets_a_tls_handshake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // The relay's side: the first three bytes, then a hang-up.
        let relay = async {
            let (stream, _) = listener.accept().await.ok()?;
            let mut first = [0_u8; 3];
            let mut got = 0;
            while got < first.len() {
                stream.readable().await.ok()?;
                match stream.try_read(&mut first[got..]) {
                    Ok(0) => return None,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return None,
                }
            }
            Some(first)
        };
        let client = RelayClient::new(&format!("https://{addr}"), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        let token = Secret::from("token");
        let both = async { tokio::join!(relay, client.login(&token)) };
        let (first, result) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .unwrap_or_else(|_| panic!("no answer within 10 s"));
        // Content type 22 (handshake), record version 3.x.
        assert_eq!(first.map(|b| (b[0], b[1])), Some((22, 3)));
        assert_eq!(result.err().map(|e| e.class()), Some(ErrorClass::Network));
    }

    #[test]
    fn errors_never_carry_the_session_token() {
        let session = Session {
            uuid: "u".into(),
            name: "n".into(),
            jwt: Secret::from("the.jwt.value"),
            expires_at: None,
        };
        assert!(!format!("{session:?}").contains("the.jwt.value"));
    }
}
