//! `rjob rerun JOB [--failed|--unreachable|--all]`: the daemon starts a new job with the
//! earlier job's script, arguments, interpreter and settings on the chosen hosts; the
//! password, never stored, is read again here.

use rjob_proto::v1 as pb;

use super::{from_status, DaemonAddr};
use crate::cli::RerunArgs;
use crate::password::{self, Source};

pub async fn run(args: &RerunArgs, daemon: &DaemonAddr) -> anyhow::Result<u8> {
    let hosts = if args.all {
        pb::RerunHosts::All
    } else if args.unreachable {
        pb::RerunHosts::Unreachable
    } else {
        pb::RerunHosts::Failed
    };
    let how = Source {
        ask: args.ask_password,
        file: args.password_file.as_deref(),
        stdin: args.password_stdin,
    };
    let mut client = daemon.connect().await?;
    let users = if how.ask {
        // The prompt names the user the password is for, as `rjob invoke --user` does.
        let listed = client
            .list_jobs(pb::ListJobsRequest {
                jobs: vec![args.job.clone()],
            })
            .await
            .map_err(from_status)?
            .into_inner();
        listed.jobs.first().map(|j| j.run_as.clone()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let password = password::read_from(&how, &prompt(&users))?;
    let request = pb::RerunJobRequest {
        job: args.job.clone(),
        hosts: hosts.into(),
        name: args.job_name.clone().unwrap_or_default(),
        password: password.as_deref().map(String::from).unwrap_or_default(),
    };
    let job = client.rerun_job(request).await.map_err(from_status)?.into_inner();
    super::start::created(&job, args.output)
}

/// The password prompt: the job's one run-as user by name.
fn prompt(users: &[String]) -> String {
    match users {
        [one] => format!("password for {}: ", crate::escape::text(one)),
        _ => "password for the job's run-as user: ".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::prompt;

    #[test]
    fn the_prompt_names_the_one_run_as_user() {
        assert_eq!(prompt(&["deploy".into()]), "password for deploy: ");
        assert_eq!(prompt(&[]), "password for the job's run-as user: ");
        assert_eq!(
            prompt(&["a\x1b[2J".into()]),
            format!("password for {}: ", crate::escape::text("a\x1b[2J"))
        );
    }
}
