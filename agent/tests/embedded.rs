//! The embedded agent (the daemon's agent for local jobs) on its private socket: it expires an
//! ended run nobody received once its retention has passed, as `rjob-agent` does.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rjob_agent::config::AgentConfig;
use rjob_agent::embedded::{self, Embedding};
use rjob_agent::policy::Policy;
use rjob_agent::runner::RunUser;
use rjob_proto::v1 as pb;
use rjob_proto::v1::agent_client::AgentClient;
use tonic::transport::{Channel, Endpoint};

/// The one deadline of these tests' waits (for a loaded machine; nothing is timed).
const PATIENCE: Duration = Duration::from_secs(60);

async fn client(socket: PathBuf) -> anyhow::Result<AgentClient<Channel>> {
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(AgentClient::new(channel))
}

/// Asks `get_run` until `done` holds for its answer.
async fn wait_for(
    agent: &mut AgentClient<Channel>,
    run_id: &str,
    what: &str,
    done: impl Fn(&Result<pb::RunInfo, tonic::Status>) -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let answer = agent
            .get_run(pb::GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map(tonic::Response::into_inner);
        if done(&answer) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < PATIENCE, "{what}: still {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_ended_run_nobody_received_expires_after_the_retention() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("agent.sock");
    let mut config = AgentConfig::local(dir.path().join("spool"));
    config.retention = Duration::from_millis(200);
    let me = RunUser::current()?.name;
    let local = embedded::serve(Embedding {
        socket: socket.clone(),
        config,
        policy: Policy::own_user_only(&me),
        identity: "local".to_string(),
    })?;
    let mut agent = client(socket).await?;
    let started = agent
        .start_run(pb::StartRunRequest {
            script: "echo kept until received or expired".to_string(),
            label: "expiry".to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let run_id = started.run_id;
    // Ended, its output never acknowledged: the agent keeps it for now...
    wait_for(&mut agent, &run_id, "the run ends", |answer| {
        answer.as_ref().is_ok_and(|info| info.result.is_some())
    })
    .await?;
    // ...and removes it once the retention has passed.
    wait_for(&mut agent, &run_id, "the run expires", |answer| {
        answer
            .as_ref()
            .is_err_and(|status| status.code() == tonic::Code::NotFound)
    })
    .await?;
    let runs = agent.list_runs(pb::ListRunsRequest {}).await?.into_inner().runs;
    assert!(runs.is_empty(), "expired runs are not listed: {runs:?}");
    local.stop(Duration::from_secs(5)).await;
    Ok(())
}
