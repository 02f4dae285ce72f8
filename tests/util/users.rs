//! Acting as another user (the tests run as root): programs started through `setpriv` with
//! another uid and gid and no supplementary groups, so keyfed sees a caller that is not root.
//! See [`super::as_root_or_skip`] for tests that cannot run otherwise.

/// The `setpriv` command line that runs what follows it as `uid`/`gid` with no supplementary
/// groups.
pub fn setpriv(uid: u32, gid: u32) -> [String; 4] {
    [
        "setpriv".to_owned(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".to_owned(),
    ]
}

/// `PROGRAM` as `uid`/`gid`: add its arguments, then run it.
pub fn as_user(uid: u32, gid: u32, program: &str) -> tokio::process::Command {
    let [setpriv, ids @ ..] = setpriv(uid, gid);
    let mut command = tokio::process::Command::new(setpriv);
    command.args(ids).arg(program);
    command
}

/// Runs `curl -s ARGS` (never through a proxy) as `uid`/`gid` with a clean environment;
/// returns the HTTP status (`000` when curl got no answer) and the body.
pub async fn curl_as(uid: u32, gid: u32, args: &[&str]) -> (String, String) {
    let output = as_user(uid, gid, "curl")
        .args(["-s", "--noproxy", "*", "-w", "\n%{http_code}"])
        .args(args)
        .env_clear()
        .output()
        .await
        .unwrap_or_else(|e| panic!("setpriv curl as uid {uid}: {e}"));
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.to_owned(), body.to_owned())
}
