//! Wiring: the gRPC server on an already-bound listener (tests bind port 0),
//! health and reflection, the sweeper, and graceful shutdown.

use crate::engine::Engine;
use crate::proto::v1::approval_service_server::ApprovalServiceServer;
use crate::proto::v1::audit_service_server::AuditServiceServer;
use crate::proto::v1::decision_service_server::DecisionServiceServer;
use crate::proto::v1::policy_service_server::PolicyServiceServer;
use crate::service::grpc::Grpc;
use crate::service::http::HttpOptions;
use crate::service::limit::{Ceiling, InFlight, Limited, Overload};
use crate::service::observe::{Door, Observe, Tracer, TracingOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Server;

/// Server settings beyond the engine's.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub sweep_interval: Duration,
    /// The largest gRPC message accepted.
    pub max_message_bytes: usize,
    /// TLS on both listeners; plaintext when absent.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// OTLP export of request spans; off when absent.
    pub tracing: Option<TracingOptions>,
    /// Signed checkpoints of this replica's audit chain, appended to a
    /// file; off when absent.
    pub checkpoints: Option<CheckpointOptions>,
}

/// Where and how often this replica's chain head is signed.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub file: std::path::PathBuf,
    pub interval: Duration,
}

/// Signs this replica's chain head and appends it to the file when it
/// moved since `last` (the seq last written); returns the seq written.
async fn write_checkpoint(
    engine: &Engine,
    options: &CheckpointOptions,
    last: Option<i64>,
) -> Option<i64> {
    let signed = match engine.checkpoint(engine.replica_id()).await {
        Ok(Some(s)) => s,
        Ok(None) => return last,
        Err(e) => {
            tracing::error!(error = %e, "audit checkpoint: the chain head could not be read");
            return last;
        }
    };
    if Some(signed.0.seq) == last {
        return last;
    }
    let line = format!("{}\n", signed.1);
    let file = options.file.clone();
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    })
    .await;
    match written {
        Ok(Ok(())) => {
            tracing::info!(seq = signed.0.seq, entry_hash = %signed.0.entry_hash, "audit checkpoint written");
            Some(signed.0.seq)
        }
        Ok(Err(e)) => {
            tracing::error!(file = %options.file.display(), error = %e, "audit checkpoint: cannot append to the file");
            last
        }
        Err(e) => {
            tracing::error!(error = %e, "audit checkpoint: the writer failed");
            last
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            sweep_interval: Duration::from_secs(1),
            max_message_bytes: 1024 * 1024 + 64 * 1024,
            tls: None,
            tracing: None,
            checkpoints: None,
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` completes, then drains
/// in-flight calls. The sweeper runs every `sweep_interval` meanwhile.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_all(engine, listener, None, None, options, shutdown).await
}

/// Serves gRPC on `listener`, the HTTP API and page on `http` and runs the
/// notification worker when given, until `shutdown` completes; then the
/// servers drain their requests in flight and the worker its round.
pub async fn serve_all(
    engine: Arc<Engine>,
    listener: TcpListener,
    http: Option<(TcpListener, HttpOptions)>,
    notifier: Option<crate::notify::Notifier>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // One shutdown signal for both servers.
    let (down_tx, down_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = down_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&down| down).await;
    };
    if let Some(tls) = &options.tls {
        tls.watch(down_rx.clone());
    }
    let (tracer, exporter) = match options.tracing.clone() {
        Some(t) => {
            let (tracer, task) = Tracer::start(engine.clone(), t);
            (Some(tracer), Some(task))
        }
        None => (None, None),
    };
    // The listeners' bounds: connections per listener, requests in flight
    // over both doors together.
    let bounds = engine.resources();
    let refused: Arc<dyn Fn(Overload) + Send + Sync> = {
        let engine = engine.clone();
        Arc::new(move |what: Overload| engine.count_overload(what.as_str()))
    };
    let connections = || {
        Ceiling::new(
            bounds.max_connections_per_listener,
            Overload::Connections,
            refused.clone(),
        )
    };
    let in_flight = InFlight(Ceiling::new(
        bounds.max_requests_in_flight,
        Overload::Requests,
        refused.clone(),
    ));
    let http_task = http.map(|(l, o)| {
        let app = crate::service::http::app(engine.clone(), o)
            .layer(in_flight.clone())
            .layer(Observe::new(Door::Http, engine.clone(), tracer.clone()));
        let stop = stopped(down_rx.clone());
        match &options.tls {
            None => tokio::spawn(crate::service::http::serve(
                Limited {
                    listener: l,
                    ceiling: connections(),
                },
                app,
                stop,
            )),
            Some(tls) => tokio::spawn(crate::service::http::serve_tls(
                tls.accept(l, crate::tls::Door::Http, connections()),
                app,
                stop,
            )),
        }
    });
    // This replica's chain head, signed every interval while serving.
    let checkpoint_task = options.checkpoints.clone().map(|c| {
        let (engine, mut down) = (engine.clone(), down_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(c.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => last = write_checkpoint(&engine, &c, last).await,
                    // The only change is the shutdown.
                    _ = down.changed() => return last,
                }
            }
        })
    });
    // The notifier finishes the round in flight when told to stop.
    let notify_task = notifier.map(|n| tokio::spawn(n.run(down_rx.clone())));
    let shutdown = stopped(down_rx);
    let grpc = Grpc::new(engine.clone());
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DecisionServiceServer<Grpc>>().await;
    reporter.set_serving::<ApprovalServiceServer<Grpc>>().await;
    reporter.set_serving::<PolicyServiceServer<Grpc>>().await;
    reporter.set_serving::<AuditServiceServer<Grpc>>().await;
    // The empty service name is the server as a whole.
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let sweeper_engine = engine.clone();
    let interval = options.sweep_interval;
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = sweeper_engine.sweep().await {
                        tracing::error!(error = %e, "sweep failed");
                    }
                }
                _ = stop_rx.changed() => break,
            }
        }
    });

    let max = options.max_message_bytes;
    let router = Server::builder()
        .layer(Observe::new(Door::Grpc, engine.clone(), tracer))
        .layer(in_flight)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            DecisionServiceServer::new(grpc.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max * 2),
        )
        .add_service(
            ApprovalServiceServer::new(grpc.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max * 64),
        )
        .add_service(
            PolicyServiceServer::new(grpc.clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(
            AuditServiceServer::new(grpc)
                .max_decoding_message_size(max)
                .max_encoding_message_size(64 * 1024 * 1024),
        );
    let stop = async move {
        shutdown.await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };
    let result = match &options.tls {
        None => {
            let incoming = crate::service::limit::incoming(listener, connections());
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
        Some(tls) => {
            let incoming = tls
                .accept(listener, crate::tls::Door::Grpc, connections())
                .into_stream();
            router.serve_with_incoming_shutdown(incoming, stop).await
        }
    };
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    if let Some(t) = notify_task {
        let _ = t.await;
    }
    let http_result = match http_task {
        Some(t) => match t.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Http(e)),
            Err(e) => Err(ServeError::Http(std::io::Error::other(e))),
        },
        None => Ok(()),
    };
    // Both servers have stopped and dropped their tracers: the exporter
    // sends what is queued and ends (bounded, so a dead collector cannot
    // hold the shutdown).
    if let Some(task) = exporter {
        let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
    }
    // Both servers have drained: the last head is signed on the way out.
    if let (Some(task), Some(c)) = (checkpoint_task, &options.checkpoints) {
        let last = task.await.ok().flatten();
        write_checkpoint(&engine, c, last).await;
    }
    http_result?;
    result.map_err(ServeError::Transport)
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC transport: {0}")]
    Transport(tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("HTTP: {0}")]
    Http(std::io::Error),
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: draining in-flight calls");
}
