//! `rjob invoke` and what a run or a client can reach: only the controller's CA gets a run,
//! only the client that started a run sees or controls it, and a run inherits nothing of the
//! agent (its environment, its descriptors). Split from `invoke.rs`.

use std::time::Duration;

use rjob_tests::{ran, Fleet};

#[test]
fn a_client_certificate_from_another_ca_is_refused_and_nothing_runs() {
    let fleet = Fleet::start(1).expect("fleet");
    let marker = fleet.scratch().join("ran");
    let other = rjob_tests::Pki::init(&fleet.tmp.path().join("other-pki")).expect("other CA");
    let out = ran(fleet.rjob().env("RJOB_IDENTITY", &other.dir).args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--script",
        &format!("touch {}", marker.display()),
    ]));
    assert_eq!(
        out.code, 4,
        "a refused TLS handshake is unreachable (exit 4): {out}"
    );
    assert!(out.stderr.contains("Failed"), "{out}");
    assert!(!marker.exists(), "the script ran for a foreign client");
}

#[test]
fn a_client_without_a_certificate_is_refused_and_nothing_runs() {
    use rjob_proto::v1::agent_client::AgentClient;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

    let fleet = Fleet::start(1).expect("fleet");
    let marker = fleet.scratch().join("ran");
    let agent = &fleet.agents[0];
    let ca = std::fs::read(fleet.pki.dir.join("ca.crt")).expect("ca.crt");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result: Result<(), String> = runtime.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(agent.addr.ip().to_string());
        let endpoint = Endpoint::from_shared(format!("https://{}", agent.addr))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?;
        let channel = endpoint.connect().await.map_err(|e| format!("connect: {e}"))?;
        let mut client = AgentClient::new(channel);
        client
            .start_run(rjob_proto::v1::StartRunRequest {
                script: format!("touch {}", marker.display()),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("start_run: {e}"))?;
        Ok(())
    });
    assert!(result.is_err(), "a client without a certificate was served");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !marker.exists(),
        "the script ran for a client without a certificate"
    );
}

#[test]
fn a_run_sees_none_of_the_agents_environment() {
    let fleet = Fleet::start_with(1, |cmd| {
        cmd.env("AGENT_SECRET_TOKEN", "s3cr3t");
    })
    .expect("fleet");
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--env",
        "EXTRA=1",
        "--script",
        "env",
    ]));
    assert_eq!(out.code, 0, "{out}");
    let names: Vec<String> = out
        .lines_of(&fleet.agents[0].host())
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();
    assert!(!out.stdout.contains("s3cr3t"), "{out}");
    let allowed = [
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "EXTRA", "PWD", "SHLVL", "_", "OLDPWD",
    ];
    for name in &names {
        assert!(
            allowed.contains(&name.as_str()),
            "unexpected variable {name} in {names:?}"
        );
    }
    for name in ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "EXTRA"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
}

#[test]
fn a_run_inherits_no_descriptor_of_the_agent() {
    let fleet = Fleet::start(1).expect("fleet");
    // The shell's own descriptors, as the kernel names them: stdin /dev/null, the output
    // pipes, and the script (a memfd); no socket, no spool file, nothing of the agent's.
    let out = ran(fleet.rjob().args([
        "invoke",
        "-H",
        &fleet.hosts(),
        "--script",
        r#"for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done"#,
    ]));
    assert_eq!(out.code, 0, "{out}");
    let fds = out.lines_of(&fleet.agents[0].host());
    assert!(fds.len() >= 4, "{out}");
    for line in &fds {
        let (_, target) = line.split_once(' ').unwrap_or((line, ""));
        // An empty target: the descriptor the glob itself used, closed since.
        assert!(
            target.is_empty()
                || target == "/dev/null"
                || target.starts_with("pipe:")
                || target.starts_with("/memfd:rjob-script"),
            "a run holds a descriptor it should not have: {line:?} in {fds:?}"
        );
    }
}

#[test]
fn only_the_client_that_started_a_run_can_see_or_control_it() {
    use rjob_proto::v1 as pb;
    use rjob_tests::raw::agent_client;

    let fleet = Fleet::start(1).expect("fleet");
    let other_dir = fleet.tmp.path().join("other-client");
    let out = ran(fleet
        .rjob()
        .args(["pki", "issue-client", "other-client", "--ca-dir"])
        .arg(&fleet.pki.dir)
        .arg("--out")
        .arg(&other_dir));
    assert_eq!(out.code, 0, "{out}");
    let agent = &fleet.agents[0];
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut owner = agent_client(agent, &fleet.pki.dir).await;
        let mut other = agent_client(agent, &other_dir).await;
        let run_id = owner
            .start_run(pb::StartRunRequest {
                script: "echo secret-output; sleep 30".into(),
                ..Default::default()
            })
            .await
            .expect("the owner starts a run")
            .into_inner()
            .run_id;
        let listed = other
            .list_runs(pb::ListRunsRequest {})
            .await
            .expect("list")
            .into_inner()
            .runs;
        assert!(listed.is_empty(), "another client sees the run: {listed:?}");
        let attach = other
            .attach_run(pb::AttachRunRequest {
                run_id: run_id.clone(),
                after_seq: 0,
            })
            .await;
        assert_eq!(
            attach.err().map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        let stop = other
            .stop_run(pb::RunControlRequest {
                run_id: run_id.clone(),
            })
            .await;
        assert_eq!(stop.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
        let ack = other
            .ack_run(pb::AckRunRequest {
                run_id: run_id.clone(),
                seq: u64::MAX,
            })
            .await;
        assert_eq!(ack.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied));
        let mine = owner
            .list_runs(pb::ListRunsRequest {})
            .await
            .expect("list")
            .into_inner()
            .runs;
        assert_eq!(mine.len(), 1);
        owner
            .stop_run(pb::RunControlRequest { run_id })
            .await
            .expect("the owner stops it");
    });
}
