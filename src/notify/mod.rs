//! Notifications: the outbox delivered. Every transition writes its
//! messages to the outbox in its own transaction; the worker here (one per
//! replica) routes each new message to its channels, then claims due
//! deliveries with a lease, sends them, and records the result: delivered,
//! retried later (exponential backoff with jitter), or dead after the
//! configured number of tries. A crash mid-send leaves the lease to run
//! out and another replica (or this one, restarted) sends again; receivers
//! deduplicate by the message's idempotency key. Nothing reaches a channel
//! except through the outbox.

mod route;
pub mod send;

pub use route::{ChannelKind, Route, backoff_ms, channels_for};
pub use send::{sign_slack, sign_webhook, slack_blocks, slack_call, verify_slack, verify_webhook};

use crate::engine::{Engine, JobView};
use crate::store::{DeliveryResult, DeliveryRow, Store};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// `[notify]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Tries before a delivery is dead-lettered.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// How long a claimed delivery stays this replica's.
    pub lease_secs: u64,
    /// How often the worker looks for work.
    pub poll_ms: u64,
    /// The approver page's address as people reach it (for links), e.g.
    /// `https://gavel.example.com/ui/`.
    pub page_url: String,
    pub channels: Vec<ChannelConfig>,
    pub routes: Vec<Route>,
    /// Channels for messages no route matches.
    pub default_channels: Vec<String>,
    /// The Slack app, when a channel is of kind `slack`.
    pub slack: Option<SlackConfig>,
}

/// `[notify.slack]`: the Slack app gavel posts as and takes clicks from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The Web API base URL (Slack's, or a test fake's).
    pub api_url: String,
    /// The bot token (`xoxb-…`), from the environment or a file.
    #[serde(default)]
    pub bot_token_env: Option<String>,
    #[serde(default)]
    pub bot_token_file: Option<String>,
    /// The app's signing secret, for verifying interactions.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    #[serde(default)]
    pub signing_secret_file: Option<String>,
}

/// The Slack app, ready: its secrets read.
#[derive(Clone)]
pub struct SlackApp {
    pub api_url: String,
    pub bot_token: String,
    pub signing_secret: String,
}

impl std::fmt::Debug for SlackApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApp")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

fn read_secret(
    what: &str,
    env: &Option<String>,
    file: &Option<String>,
) -> Result<String, NotifyConfigError> {
    let bad = |m: String| NotifyConfigError(m);
    let s = match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map_err(|_| bad(format!("{what}: environment variable {var} is not set")))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("{what}: {path}: {e}")))?
            .trim_end()
            .to_owned(),
        (None, None) => {
            return Err(bad(format!(
                "{what}: give it from the environment or a file"
            )));
        }
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "{what}: give the environment or a file, not both"
            )));
        }
    };
    if s.is_empty() {
        return Err(bad(format!("{what}: it is empty")));
    }
    Ok(s)
}

impl SlackConfig {
    pub fn app(&self) -> Result<SlackApp, NotifyConfigError> {
        if !(self.api_url.starts_with("http://") || self.api_url.starts_with("https://")) {
            return Err(NotifyConfigError(format!(
                "slack.api_url `{}` is not http:// or https://",
                self.api_url
            )));
        }
        Ok(SlackApp {
            api_url: self.api_url.trim_end_matches('/').to_owned(),
            bot_token: read_secret("slack bot token", &self.bot_token_env, &self.bot_token_file)?,
            signing_secret: read_secret(
                "slack signing secret",
                &self.signing_secret_env,
                &self.signing_secret_file,
            )?,
        })
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_ms: 5 * 60 * 1000,
            lease_secs: 60,
            poll_ms: 500,
            page_url: String::new(),
            channels: Vec::new(),
            routes: Vec::new(),
            default_channels: Vec::new(),
            slack: None,
        }
    }
}

/// `[[notify.channels]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Webhook: where to POST. PagerDuty: the Events API base URL (the
    /// worker posts to `<url>/v2/enqueue`). Slack: unused (the app's
    /// `api_url` is).
    #[serde(default)]
    pub url: String,
    /// Slack: the channel id (`C…`) to post in.
    #[serde(default)]
    pub slack_channel: Option<String>,
    /// The environment variable holding the webhook signing secret or the
    /// PagerDuty routing key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Or a file holding it (trailing whitespace ignored).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Most sends per second from one replica.
    #[serde(default = "default_rate")]
    pub rate_per_sec: f64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_rate() -> f64 {
    10.0
}

fn default_timeout() -> u64 {
    5000
}

/// A channel ready to send: its secret read, its client built.
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub url: String,
    secret: String,
    /// Slack: the channel id.
    slack_channel: String,
    timeout: Duration,
    rate: RateLimit,
}

/// A configuration the worker cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("notify: {0}")]
pub struct NotifyConfigError(pub String);

impl NotifyConfig {
    /// Checks the configuration and reads the channels' secrets: an unknown
    /// channel in a route, a duplicate name, a bad URL, a missing secret or
    /// an unknown kind name is an error at start.
    pub fn channels(&self) -> Result<Vec<Channel>, NotifyConfigError> {
        let bad = |m: String| NotifyConfigError(m);
        if self.max_attempts == 0 || self.backoff_base_ms == 0 || self.poll_ms == 0 {
            return Err(bad(
                "max_attempts, backoff_base_ms and poll_ms must be at least 1".into(),
            ));
        }
        if self.lease_secs == 0 {
            return Err(bad("lease_secs must be at least 1".into()));
        }
        let mut out: Vec<Channel> = Vec::new();
        for c in &self.channels {
            if c.name.is_empty() || out.iter().any(|o| o.name == c.name) {
                return Err(bad(format!(
                    "channel name `{}` is empty or repeated",
                    c.name
                )));
            }
            if c.kind == ChannelKind::Slack {
                let app = self
                    .slack
                    .as_ref()
                    .ok_or_else(|| {
                        bad(format!(
                            "channel `{}` is a Slack channel but [notify.slack] is missing",
                            c.name
                        ))
                    })?
                    .app()?;
                let target = c
                    .slack_channel
                    .clone()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        bad(format!(
                            "channel `{}`: give slack_channel (the C… id)",
                            c.name
                        ))
                    })?;
                out.push(Channel {
                    name: c.name.clone(),
                    kind: c.kind,
                    url: app.api_url,
                    secret: app.bot_token,
                    slack_channel: target,
                    timeout: Duration::from_millis(c.timeout_ms.max(1)),
                    rate: RateLimit::new(c.rate_per_sec),
                });
                continue;
            }
            if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return Err(bad(format!(
                    "channel `{}`: url `{}` is not http:// or https://",
                    c.name, c.url
                )));
            }
            if !(c.rate_per_sec > 0.0 && c.rate_per_sec.is_finite()) {
                return Err(bad(format!(
                    "channel `{}`: rate_per_sec must be > 0",
                    c.name
                )));
            }
            let secret = match (&c.secret_env, &c.secret_file) {
                (Some(var), None) => std::env::var(var).map_err(|_| {
                    bad(format!(
                        "channel `{}`: environment variable {var} is not set",
                        c.name
                    ))
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("channel `{}`: {path}: {e}", c.name)))?
                    .trim_end()
                    .to_owned(),
                (None, None) => {
                    return Err(bad(format!(
                        "channel `{}`: give secret_env or secret_file (the {})",
                        c.name,
                        match c.kind {
                            ChannelKind::Webhook => "webhook signing secret",
                            ChannelKind::Pagerduty => "PagerDuty routing key",
                            ChannelKind::Slack => "Slack bot token",
                        }
                    )));
                }
                (Some(_), Some(_)) => {
                    return Err(bad(format!(
                        "channel `{}`: give secret_env or secret_file, not both",
                        c.name
                    )));
                }
            };
            if secret.is_empty() {
                return Err(bad(format!("channel `{}`: the secret is empty", c.name)));
            }
            out.push(Channel {
                name: c.name.clone(),
                kind: c.kind,
                url: c.url.trim_end_matches('/').to_owned(),
                secret,
                slack_channel: String::new(),
                timeout: Duration::from_millis(c.timeout_ms.max(1)),
                rate: RateLimit::new(c.rate_per_sec),
            });
        }
        let known = |n: &String| out.iter().any(|c| &c.name == n);
        for (i, r) in self.routes.iter().enumerate() {
            for n in &r.channels {
                if !known(n) {
                    return Err(bad(format!("route {}: unknown channel `{n}`", i + 1)));
                }
            }
            for k in &r.kinds {
                if crate::approval::NotificationKind::parse(k).is_none() {
                    return Err(bad(format!(
                        "route {}: unknown kind `{k}` (pending, escalated, resolved, expired, overridden)",
                        i + 1
                    )));
                }
            }
        }
        for n in &self.default_channels {
            if !known(n) {
                return Err(bad(format!("default_channels: unknown channel `{n}`")));
            }
        }
        Ok(out)
    }
}

/// A token bucket: at most `rate` sends a second, bursts of up to one
/// second's worth.
struct RateLimit {
    rate: f64,
    state: std::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimit {
    fn new(rate: f64) -> RateLimit {
        RateLimit {
            rate,
            state: std::sync::Mutex::new((rate.max(1.0), tokio::time::Instant::now())),
        }
    }

    /// Waits for a token.
    async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
                s.0 = (s.0 + refill).min(self.rate.max(1.0));
                s.1 = now;
                if s.0 >= 1.0 {
                    s.0 -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - s.0) / self.rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The client gavel calls out with (channels, Slack's Web API): ring as
/// rustls' provider (installed once per process), and no redirects, so a
/// receiver cannot bounce a signed message elsewhere.
pub fn outbound_client() -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The worker's settings and channels.
pub struct Notifier {
    engine: Arc<Engine>,
    store: Arc<dyn Store>,
    config: NotifyConfig,
    channels: HashMap<String, Channel>,
    /// Who holds a lease: the replica and this process.
    owner: String,
    client: reqwest::Client,
}

/// The most messages routed, and deliveries claimed, per round.
const BATCH: i64 = 32;

impl Notifier {
    /// Refuses a policy whose escalation ladders name channels that are not
    /// configured (checked at start; a reload with one is logged when it fires).
    pub fn check_ladders(&self, doc: &crate::policy::PolicyDoc) -> Result<(), NotifyConfigError> {
        for name in doc.ladder_channels() {
            if !self.channels.contains_key(&name) {
                return Err(NotifyConfigError(format!(
                    "the policy's escalation ladder notifies `{name}`, which is not a configured channel"
                )));
            }
        }
        Ok(())
    }

    pub fn new(
        engine: Arc<Engine>,
        config: NotifyConfig,
        replica: &str,
    ) -> Result<Notifier, NotifyConfigError> {
        let channels = config
            .channels()?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        let client =
            outbound_client().map_err(|e| NotifyConfigError(format!("HTTP client: {e}")))?;
        Ok(Notifier {
            store: engine.store().clone(),
            engine,
            config,
            channels,
            owner: format!("{replica}/{}", crate::clock::id_at(0)),
            client,
        })
    }

    /// Runs until `stop` turns true; a round in flight is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|&s| s) => break,
            }
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "notification round failed; retrying");
            }
        }
    }

    /// Routes new messages and sends what is due; returns how many
    /// deliveries it finished.
    pub async fn round(&self) -> Result<usize, crate::store::StoreError> {
        let now = self.engine.now();
        for m in self.store.unrouted_outbox(BATCH).await? {
            let mut channels = match self.store.job(&m.job_id).await? {
                Some(job) => channels_for(
                    &self.config.routes,
                    &self.config.default_channels,
                    |n| self.channels.get(n).map(|c| c.kind),
                    m.kind,
                    &job,
                ),
                None => vec![],
            };
            // A rung of an escalation ladder also goes to the channel it names.
            if let Some(target) = m.body.get("notify").and_then(|v| v.as_str()) {
                match self.channels.get(target) {
                    Some(c) if c.kind.carries(m.kind) => {
                        if !channels.iter().any(|n| n == target) {
                            channels.push(target.to_owned());
                        }
                    }
                    _ => tracing::warn!(
                        message = %m.id,
                        channel = target,
                        "an escalation step names a channel that is not configured"
                    ),
                }
            }
            self.store.route_outbox(&m.id, channels, now).await?;
        }
        let lease_ms = (self.config.lease_secs as i64).saturating_mul(1000);
        // Claim no more than can be sent, one after another at the slowest
        // channel's timeout, before the lease runs out: otherwise another
        // replica could take over deliveries this one is still sending.
        let slowest = self
            .channels
            .values()
            .map(|c| c.timeout.as_millis() as i64)
            .max()
            .unwrap_or(1)
            .max(1);
        let limit = (lease_ms / slowest).clamp(1, BATCH);
        let due = self
            .store
            .claim_deliveries(&self.owner, now, lease_ms, limit)
            .await?;
        let mut done = 0;
        for d in due {
            let result = self.deliver(&d).await;
            self.engine.count_delivery(&d.channel, &result);
            let at = self.engine.now();
            if let DeliveryResult::Dead { error } = &result {
                tracing::error!(delivery = %d.id, %error, "notification dead-lettered");
            }
            if self
                .store
                .finish_delivery(&d.id, &self.owner, result, at)
                .await?
            {
                done += 1;
            }
        }
        Ok(done)
    }

    async fn deliver(&self, d: &DeliveryRow) -> DeliveryResult {
        let Some(channel) = self.channels.get(&d.channel) else {
            return DeliveryResult::Dead {
                error: format!("channel `{}` is no longer configured", d.channel),
            };
        };
        channel.rate.acquire().await;
        let view = match self.store.job(&d.message.job_id).await {
            Ok(Some(r)) => JobView::new(r, self.engine.now()),
            Ok(None) => {
                return DeliveryResult::Dead {
                    error: format!("job `{}` is gone", d.message.job_id),
                };
            }
            Err(e) => return self.retry(d, format!("reading the job: {e}")),
        };
        if channel.kind == ChannelKind::Slack {
            return match send::slack(
                &self.client,
                self.store.as_ref(),
                channel,
                &channel.slack_channel,
                &self.config.page_url,
                &d.message,
                &view,
            )
            .await
            {
                Ok(()) => DeliveryResult::Delivered,
                Err(e) => self.retry(d, e),
            };
        }
        let sent = send::send(
            &self.client,
            channel,
            &channel.secret,
            &self.config.page_url,
            &d.message,
            &view,
            self.engine.now(),
        )
        .await;
        match sent {
            Ok(()) => DeliveryResult::Delivered,
            Err(e) => self.retry(d, e),
        }
    }

    fn retry(&self, d: &DeliveryRow, error: String) -> DeliveryResult {
        let attempt = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
        if attempt >= self.config.max_attempts {
            return DeliveryResult::Dead {
                error: format!("{error} (after {attempt} tries)"),
            };
        }
        let mut r = [0u8; 8];
        let _ = getrandom::fill(&mut r);
        let wait = backoff_ms(
            attempt,
            self.config.backoff_base_ms,
            self.config.backoff_max_ms.max(self.config.backoff_base_ms),
            u64::from_le_bytes(r),
        );
        tracing::warn!(delivery = %d.id, attempt, %error, retry_in_ms = wait, "notification failed");
        DeliveryResult::Retry {
            at: self.engine.now().saturating_add(wait as i64),
            error,
        }
    }
}
