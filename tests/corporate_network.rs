//! issue 11 part 7: a corporate network. Every upstream — Keycloak, AWS STS, Google (STS and
//! IAM Credentials) and Entra ID — is reached by name through a real HTTP proxy (Debian's
//! tinyproxy, started by the test with a configuration of its own) with CONNECT, over TLS with
//! certificates from a private CA that keyfed trusts only through `ca_file`; `NO_PROXY` sends
//! one upstream around the proxy; and a proxy that refuses (a tinyproxy filter denying STS and
//! Entra) is named in `keyfed once`'s and `keyfed status`'s errors, with what it said, as is a
//! proxy that is down.
//!
//! Names, not addresses: keyfed never sends a loopback upstream through a proxy, so the
//! emulators (on 127.0.0.1) are given names of their own (`keycloak.corp.test`, …) in a hosts
//! file. The test re-runs itself (`corporate_network_child`) in a private mount namespace with
//! that hosts file over `/etc/hosts`, as the gcp_auth test does: the emulators and tinyproxy
//! resolve the names there, and every connection stays on loopback. keyfed runs in a namespace
//! of its own inside it, whose hosts file knows only the names `NO_PROXY` lets it reach
//! directly: a request that went around the proxy could not even resolve its host.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::emulator::{TestCa, report};
use keyfed_gcp::emulator::{GcpEmulator, PoolProvider, ServiceAccount, principal_set};
use keyfed_keycloak::emulator::KeycloakEmulator;

use crate::util::azure::{APP, TENANT, service_account_of};
use crate::util::gcp::{GCP_AUD, PROJECT_ID, PROVIDER, SERVICE_ACCOUNT};
use crate::util::{AWS_AUD, Fixture, ROLE, free_port, wait_until};

const KEYCLOAK: &str = "keycloak.corp.test";
const STS: &str = "sts.corp.test";
const GOOGLE: &str = "google.corp.test";
const LOGIN: &str = "login.corp.test";
const NAMES: [&str; 4] = [KEYCLOAK, STS, GOOGLE, LOGIN];

/// Set for the child run inside the namespace.
const CHILD: &str = "KEYFED_TEST_CORPORATE_NETWORK_CHILD";
/// How the child hands its figures to the parent, which records the row.
const CHILD_SAYS: &str = "corporate network figures:";

/// `sh -c` binding `$0` over /etc/hosts in a new mount namespace, then running the rest.
const WITH_HOSTS: &str = "mount --bind \"$0\" /etc/hosts && exec \"$@\"";

/// A hosts file mapping `names` to loopback.
fn hosts(names: &[&str]) -> String {
    let mut text = "127.0.0.1 localhost\n::1 localhost\n".to_owned();
    for name in names {
        text.push_str(&format!("127.0.0.1 {name}\n"));
    }
    text
}

#[tokio::test]
async fn every_upstream_through_tinyproxy_with_a_private_ca() {
    if !crate::util::as_root_or_skip("every_upstream_through_tinyproxy_with_a_private_ca") {
        return;
    }
    let tinyproxy = std::process::Command::new("tinyproxy").arg("-v").output();
    assert!(
        tinyproxy.as_ref().is_ok_and(|o| o.status.success()),
        "tinyproxy is missing (tests/run installs it: apt-get install tinyproxy-bin): {tinyproxy:?}"
    );
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hosts_file = dir.path().join("hosts");
    std::fs::write(&hosts_file, hosts(&NAMES)).unwrap_or_else(|e| panic!("{e}"));
    crate::util::set_mode(&hosts_file, 0o644);
    let test_binary = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let output = tokio::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", WITH_HOSTS])
        .arg(&hosts_file)
        .arg(&test_binary)
        .args([
            "--exact",
            "corporate_network::corporate_network_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run unshare: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the test in its namespace failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let figures = stdout
        .lines()
        .find_map(|l| l.split_once(CHILD_SAYS).map(|(_, f)| f.trim().to_owned()))
        .unwrap_or_else(|| panic!("the child reported no figures:\n{stdout}"));
    println!("{figures}");
    report::held(
        "Corporate network: every upstream through tinyproxy with a private CA",
        "keyfed once and keyfed run reach Keycloak, AWS STS, Google STS and IAM Credentials and \
         Entra ID by name only through tinyproxy (CONNECT; keyfed cannot resolve the names \
         itself), over TLS from a private CA trusted through ca_file; NO_PROXY sends STS \
         around the proxy; a tinyproxy filter refusing STS and Entra, and a proxy that is down, \
         are named in once's and status's errors with what they said, Google still served",
        &format!(
            "{figures}; whole test {:.1} s",
            started.elapsed().as_secs_f64()
        ),
    );
}

/// The emulators of every upstream over TLS from `ca`, each presenting a certificate for its
/// name, and a configuration with one target per cloud reaching them by name.
struct Upstreams {
    sts: Arc<StsEmulator>,
    gcp: Arc<GcpEmulator>,
    entra: Arc<EntraEmulator>,
}

impl Upstreams {
    async fn start(fx: &mut Fixture) -> Self {
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        let certificate = ca
            .server_config_for(&NAMES)
            .unwrap_or_else(|e| panic!("certificate: {e}"));
        let realm = fx.realm();
        let sub = service_account_of(&realm);
        fx.start(
            KeycloakEmulator::builder(realm)
                .tls(&ca)
                .public_host(KEYCLOAK),
        )
        .await;
        let keycloak = fx.keycloak();
        keycloak
            .control()
            .present_certificate(Some(certificate.clone()));
        let issuer = keycloak.issuer_url();
        assert!(
            issuer.starts_with(&format!("https://{KEYCLOAK}:")),
            "{issuer}"
        );

        let sts = StsEmulator::builder()
            .provider(OidcProvider::new(&issuer, &[AWS_AUD]))
            .role(Role::new(ROLE, &issuer))
            .tls(&ca)
            .start()
            .await
            .unwrap_or_else(|e| panic!("sts emulator: {e}"));
        let provider = PoolProvider::new(PROVIDER, &issuer);
        let gcp = GcpEmulator::builder()
            .service_account(
                ServiceAccount::new(SERVICE_ACCOUNT).bind(&principal_set(provider.pool())),
            )
            .provider(provider)
            .tls(&ca)
            .start()
            .await
            .unwrap_or_else(|e| panic!("gcp emulator: {e}"));
        let entra = EntraEmulator::builder()
            .tenant(TENANT)
            .tls(&ca)
            .app(App::new(APP).federated_credential(FederatedCredential::new(&issuer, &sub)))
            .start()
            .await
            .unwrap_or_else(|e| panic!("entra emulator: {e}"));
        sts.control().present_certificate(Some(certificate.clone()));
        gcp.control().present_certificate(Some(certificate.clone()));
        entra.control().present_certificate(Some(certificate));
        let (sts, gcp, entra) = (Arc::new(sts), Arc::new(gcp), Arc::new(entra));
        fx.known.add_emulator(&sts);
        fx.known.add_emulator(&gcp);
        fx.known.add_emulator(&entra);

        fx.write("corp-ca.pem", ca.ca_pem());
        fx.write_credentials();
        let up = Self { sts, gcp, entra };
        fx.write(
            "keyfed.toml",
            &format!(
                "[issuers.corp]\nurl = \"{issuer}\"\nclient_id = \"host-secret\"\n\
                 client_secret_file = \"client-secret\"\nca_file = \"corp-ca.pem\"\n\n\
                 [control]\nsocket = \"keyfed.sock\"\n\n\
                 [targets.aws]\nissuer = \"corp\"\nscope = \"aws-audience\"\n\
                 aws = {{ role_arn = \"{role}\", region = \"us-east-1\", endpoint_url = \"{sts}\", \
                 ca_file = \"corp-ca.pem\" }}\n\n\
                 [targets.gcp]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\n\
                 [targets.gcp.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"{PROJECT_ID}\"\n\
                 service_account = \"{SERVICE_ACCOUNT}\"\nsts_url = \"{google}/v1/token\"\n\
                 iam_url = \"{google}\"\nca_file = \"corp-ca.pem\"\n\n\
                 [targets.azure]\nissuer = \"corp\"\nscope = \"azure-audience\"\n\n\
                 [targets.azure.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
                 authority_host = \"{login}\"\nca_file = \"corp-ca.pem\"\n",
                role = up.sts.role_arn(ROLE),
                sts = named(&up.sts.endpoint_url(), STS),
                google = named(&up.gcp.base_url(), GOOGLE),
                login = named(&up.entra.authority_host(), LOGIN),
            ),
        );
        up
    }

    /// Requests each emulator answered so far: Keycloak's token endpoint, STS, Google, Entra.
    fn hits(&self, fx: &Fixture) -> [u64; 4] {
        [
            fx.keycloak().token_requests(),
            self.sts.control().hits(""),
            self.gcp.control().hits(""),
            self.entra.control().hits(""),
        ]
    }
}

/// `url` with its host replaced by `name`.
fn named(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    url.set_host(Some(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    url.as_str().trim_end_matches('/').to_owned()
}

/// A tinyproxy of the test's own: its configuration in the fixture's folder, listening on a
/// free loopback port, logging every request to a file the test reads; killed when dropped.
struct Tinyproxy {
    url: String,
    log: PathBuf,
    _child: tokio::process::Child,
}

impl Tinyproxy {
    /// Starts tinyproxy; `refused` names hosts its filter denies.
    async fn start(dir: &Path, name: &str, refused: &[&str]) -> Self {
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nAllow 127.0.0.1\nTimeout 30\nMaxClients 64\n\
             LogLevel Connect\nDisableViaHeader Yes\n"
        );
        if !refused.is_empty() {
            let filter = dir.join(format!("{name}.filter"));
            let patterns: Vec<String> = refused
                .iter()
                .map(|h| format!("^{}$\n", h.replace('.', "\\.")))
                .collect();
            std::fs::write(&filter, patterns.concat()).unwrap_or_else(|e| panic!("{e}"));
            conf.push_str(&format!(
                "Filter \"{}\"\nFilterDefaultDeny No\n",
                filter.display()
            ));
        }
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = tokio::process::Command::new("tinyproxy")
            // In the foreground, logging to standard output.
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                log_file.try_clone().unwrap_or_else(|e| panic!("{e}")),
            ))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tinyproxy: {e}"));
        let address = format!("127.0.0.1:{port}");
        wait_until("tinyproxy to listen", async || {
            tokio::net::TcpStream::connect(&address).await.is_ok()
        })
        .await;
        Self {
            url: format!("http://{address}"),
            log,
            _child: child,
        }
    }

    /// The hosts the proxy was asked to CONNECT to, one entry per request, in order.
    fn connects(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("): CONNECT ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.split(':').next())
            .map(str::to_owned)
            .collect()
    }
}

/// keyfed in a mount namespace of its own whose hosts file maps only `direct` (the names it may
/// reach around the proxy), with `HTTPS_PROXY` and `NO_PROXY` set: the prefix and environment
/// for [`Fixture::keyfed_behind`] and [`Fixture::daemon_as`].
struct Keyfed {
    prefix: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Keyfed {
    fn new(fx: &Fixture, name: &str, direct: &[&str], proxy: &str) -> Self {
        let hosts_file = fx.path(&format!("{name}.hosts"));
        std::fs::write(&hosts_file, hosts(direct)).unwrap_or_else(|e| panic!("{e}"));
        crate::util::set_mode(&hosts_file, 0o644);
        Self {
            prefix: vec![
                "/usr/bin/unshare".into(),
                "--mount".into(),
                "sh".into(),
                "-c".into(),
                WITH_HOSTS.into(),
                hosts_file.display().to_string(),
            ],
            env: vec![
                ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
                ("HTTPS_PROXY", proxy.to_owned()),
                ("NO_PROXY", direct.join(",")),
            ],
        }
    }

    fn prefix(&self) -> Vec<&str> {
        self.prefix.iter().map(String::as_str).collect()
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// The consumer half of [`every_upstream_through_tinyproxy_with_a_private_ca`], run by it in a
/// mount namespace whose /etc/hosts maps every upstream's name to loopback. Run any other way,
/// it does nothing.
#[tokio::test]
#[ignore = "run by every_upstream_through_tinyproxy_with_a_private_ca inside its namespace"]
async fn corporate_network_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut fx = Fixture::new();
    let up = Upstreams::start(&mut fx).await;
    let dir = fx.path("proxies");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let proxy = Tinyproxy::start(&dir, "open", &[]).await;

    // 1. Every upstream through the proxy: keyfed cannot resolve any of the names itself.
    let through = Keyfed::new(&fx, "through", &[], &proxy.url);
    let before = up.hits(&fx);
    let timed = Instant::now();
    let run = fx
        .keyfed_behind(&through.prefix(), &["once"], &through.env())
        .await;
    let once_secs = timed.elapsed().as_secs_f64();
    run.ok();
    for target in ["aws", "gcp", "azure"] {
        run.prints(&format!("ok      {target}:"));
    }
    let after = up.hits(&fx);
    for (i, name) in NAMES.iter().enumerate() {
        assert!(after[i] > before[i], "{name} got no request");
    }
    let connects = proxy.connects();
    for name in NAMES {
        assert!(
            connects.iter().any(|c| c == name),
            "tinyproxy was not asked for {name}: {connects:?}"
        );
    }
    let proxied = connects.len();

    // 2. NO_PROXY: STS around the proxy (keyfed may resolve its name), the rest through it.
    let around = Keyfed::new(&fx, "around", &[STS], &proxy.url);
    let sts_before = up.hits(&fx)[1];
    fx.keyfed_behind(&around.prefix(), &["once"], &around.env())
        .await
        .ok();
    let connects = proxy.connects();
    let new = &connects[proxied..];
    assert!(up.hits(&fx)[1] > sts_before, "STS got no request");
    assert!(
        !new.iter().any(|c| c == STS),
        "STS went through the proxy: {new:?}"
    );
    for name in [KEYCLOAK, GOOGLE, LOGIN] {
        assert!(new.iter().any(|c| c == name), "{name} did not: {new:?}");
    }

    // 3. A proxy whose filter refuses STS and Entra: the AWS and Azure targets fail naming the
    // proxy and its answer; Google is served through it.
    let refusing = Tinyproxy::start(&dir, "refusing", &[STS, LOGIN]).await;
    let via_refusing = Keyfed::new(&fx, "refused", &[], &refusing.url);
    let hits_before = up.hits(&fx);
    let run = fx
        .keyfed_behind(&via_refusing.prefix(), &["once"], &via_refusing.env())
        .await;
    let refused = |name: &str, port: u16| {
        format!(
            "the proxy {} (HTTPS_PROXY) refused CONNECT {name}:{port}: 403 Filtered (tinyproxy/",
            refusing.url
        )
    };
    let said = refused(LOGIN, up.entra.addr().port());
    run.fails_with(1)
        .prints("ok      gcp:")
        .prints("FAILED  aws:")
        .prints(&refused(STS, up.sts.addr().port()))
        .prints("FAILED  azure:")
        .prints(&said)
        .prints("The request you made has been filtered");
    let hits_after = up.hits(&fx);
    assert_eq!(hits_after[1], hits_before[1], "STS was reached");
    assert_eq!(hits_after[3], hits_before[3], "Entra was reached");

    // The daemon says the same in `status`.
    let daemon = fx
        .daemon_as(&via_refusing.prefix(), &via_refusing.env())
        .await;
    let mut last_error = String::new();
    wait_until("status to name the refusing proxy", async || {
        let status = fx.status_json().await;
        last_error = status
            .as_array()
            .and_then(|targets| targets.iter().find(|t| t["name"] == "azure"))
            .and_then(|t| t["last_error"].as_str())
            .unwrap_or_default()
            .to_owned();
        last_error.contains(&said)
    })
    .await;
    fx.keyfed(&["status"]).await.prints(&said);
    daemon.stop().await;

    // 4. A proxy that is down is named too.
    let down = format!("http://127.0.0.1:{}", free_port());
    let via_down = Keyfed::new(&fx, "down", &[], &down);
    fx.keyfed_behind(&via_down.prefix(), &["once"], &via_down.env())
        .await
        .fails_with(1)
        .prints(&format!(
            "the proxy {down} (HTTPS_PROXY) could not be reached"
        ));

    println!(
        "{CHILD_SAYS} {proxied} CONNECTs through tinyproxy for 4 hosts in one keyfed once \
         ({once_secs:.2} s); with NO_PROXY={STS} {} CONNECTs, none to {STS}; the refusal read \
         \"{}\"",
        new.len(),
        last_error
            .split_once("refused CONNECT")
            .map_or(last_error.as_str(), |(_, said)| said)
            .trim()
    );
}
