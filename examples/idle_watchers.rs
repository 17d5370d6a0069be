//! Opens many idle WatchJob streams on a gavel server and holds them until
//! its stdin closes, so the server's memory can be measured with them
//! open (`benches/watch_rss.sh`).
//!
//! ```text
//! idle_watchers SERVER TOKEN JOB_ID COUNT
//! ```
//!
//! Streams are spread over connections of 100 each (below HTTP/2's usual
//! limit on concurrent streams). Prints `open COUNT` once every stream has
//! delivered its first event.

use gavel::proto::v1 as pb;
use gavel::proto::v1::decision_service_client::DecisionServiceClient;
use std::io::Read;
use tokio_stream::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, token, job_id, count] = args.as_slice() else {
        eprintln!("usage: idle_watchers SERVER TOKEN JOB_ID COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse()?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut streams = Vec::with_capacity(count);
    let mut channel = None;
    for i in 0..count {
        if i % 100 == 0 {
            channel = Some(
                tonic::transport::Channel::from_shared(server.clone())?
                    .connect()
                    .await?,
            );
        }
        let mut client = DecisionServiceClient::new(channel.clone().expect("connected"));
        let mut req = tonic::Request::new(pb::WatchJobRequest {
            job_id: job_id.clone(),
        });
        req.metadata_mut().insert("authorization", bearer.clone());
        let mut s = client.watch_job(req).await?.into_inner();
        s.next().await.ok_or("the stream ended at once")??;
        streams.push(s);
    }
    println!("open {}", streams.len());
    // Held until stdin closes.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(streams);
    Ok(())
}
