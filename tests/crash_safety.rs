//! Crash safety (issue 11, part 2): keyfed SIGKILLed at random moments while it refreshes and
//! writes, with readers reading every output file in a tight loop — none may ever see an empty,
//! torn or unparsable file, or a file gone back to an older credential, and a daemon started
//! again must rewrite every output and clear the temporary files the kills left behind. Then
//! the same for a user's shared credentials file that the AWS CLI writes at the same time
//! (`aws configure set`, which takes no lock and rewrites the file in place): no profile or
//! comment of either may be lost.
//!
//! Newer means later in the order the issuing emulator issued credentials in (each keeps it),
//! and, where a file carries the expiry the issuer stated, an expiry no earlier (see
//! `util/readers.rs`). The emulators issue credentials living 45 s (Keycloak's lifespan, Entra's token lifetime, and
//! STS's 15-minute minimum against a clock running 855 s behind), the shortest that keyfed's
//! 30-second expiry margin still uses, so targets also refresh on schedule (after 15 s).
//! The kill moments come from a seeded generator: the seed is printed, and
//! `KEYFED_CRASH_SEED=<seed>` replays the same moments.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use keyfed_aws::emulator::{OidcProvider, Role, StsEmulator};
use keyfed_azure::emulator::{App, EntraEmulator, FederatedCredential};
use keyfed_core::clock::{Clock, Sleep, SystemClock};
use keyfed_core::emulator::{TestCa, report};
use keyfed_gcp::emulator::GcpEmulator;
use keyfed_keycloak::emulator::KeycloakEmulator;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::util::azure::{APP, TENANT};
use crate::util::gcp::{GCP_AUD, PROJECT_ID, PROVIDER};
use crate::util::readers::{Format, Issued, Readers, Report, Watched};
use crate::util::{API_AUD, AWS_AUD, Daemon, Fixture, ROLE, SecretFile, wait_until_within};

/// How long every credential the emulators issue lives.
const LIFETIME: Duration = Duration::from_secs(45);
/// The shortest session STS grants (`DurationSeconds`).
const STS_MINIMUM: Duration = Duration::from_secs(900);
/// Refreshes the test must see, kills included.
const REFRESHES: usize = 200;
/// The kills the refreshes must come within (each kill but a start-up one follows a refresh).
const MAX_KILLS: usize = 2 * REFRESHES;
/// How long the kill loop may run before it is taken for a hang: a guard, not a measure.
const HANG_GUARD: Duration = Duration::from_secs(600);
/// `aws configure set` runs the CLI writes while keyfed is killed and restarted…
const CLI_WRITES: usize = 30;
/// …unless this much time passes first (the CLI takes a second or more a run on a busy machine)
/// and it wrote at least [`CLI_WRITES_LEAST`] times (or twice this time passed).
const CLI_TIME: Duration = Duration::from_secs(60);
const CLI_WRITES_LEAST: usize = 10;
/// Reader threads.
const READERS: usize = 2;
/// A user's own credentials file, before keyfed merges into it.
const USERS_FILE: &str = "# my own credentials: keep this comment\n[default]\naws_access_key_id = AKIAUSEROWN0000000001\naws_secret_access_key = users-own-secret\n\n; another comment\n[work]\nregion = eu-west-1\naws_access_key_id = AKIAUSERWORK000000001\n";

/// The real clock `behind` late: STS's 15-minute sessions end [`LIFETIME`] from now.
#[derive(Debug)]
struct Behind(Duration);

impl Clock for Behind {
    fn now(&self) -> SystemTime {
        SystemClock.now() - self.0
    }

    fn sleep_until(&self, deadline: SystemTime) -> Sleep<'_> {
        let real = deadline + self.0;
        Box::pin(async move { SystemClock.sleep_until(real).await })
    }
}

/// The seed of the kill moments: `KEYFED_CRASH_SEED`, else a fresh one; printed either way.
fn seed(test: &str) -> u64 {
    let seed = std::env::var("KEYFED_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{test}: seed {seed} (KEYFED_CRASH_SEED={seed} replays its kill moments)");
    seed
}

/// Keycloak, STS, Google Cloud and Entra emulators issuing credentials that live [`LIFETIME`].
struct Clouds {
    fx: Fixture,
    gcp: Arc<GcpEmulator>,
    entra: Arc<EntraEmulator>,
}

/// The standard realm's Keycloak emulator issuing tokens that live [`LIFETIME`], and an STS
/// emulator trusting it whose sessions end [`LIFETIME`] from now; also the `sub` of the
/// daemon's client's service account.
async fn keycloak_and_sts() -> (Fixture, String) {
    let mut fx = Fixture::new();
    let realm = fx.realm().lifespan(LIFETIME);
    let sub = realm
        .clients
        .iter()
        .find(|c| c.client_id == "host-secret")
        .map(|c| c.service_account_id.clone())
        .unwrap_or_else(|| panic!("no host-secret in the standard realm"));
    fx.start(KeycloakEmulator::builder(realm)).await;
    let issuer = fx.keycloak().issuer_url();
    let sts = StsEmulator::builder()
        .provider(OidcProvider::new(&issuer, &[AWS_AUD]))
        .role(Role::new(ROLE, &issuer))
        .clock(Arc::new(Behind(STS_MINIMUM - LIFETIME)))
        .start()
        .await
        .unwrap_or_else(|e| panic!("sts emulator: {e}"));
    let sts = Arc::new(sts);
    fx.known.add_emulator(&sts);
    fx.sts = Some(sts);
    (fx, sub)
}

/// An AWS target `name` (sessions of STS's minimum, [`LIFETIME`] by its clock) with `outputs`.
fn aws_target(fx: &Fixture, name: &str, outputs: &str) -> String {
    let sts = fx.sts();
    format!(
        "[targets.{name}]\nissuer = \"corp\"\nscope = \"aws-audience\"\nmin_token_lifetime = \"20s\"\n\
         aws = {{ role_arn = \"{}\", region = \"us-east-1\", endpoint_url = \"{}\", duration = \"15m\" }}\n\
         outputs = [{outputs}]\n\n",
        sts.role_arn(ROLE),
        sts.endpoint_url()
    )
}

impl Clouds {
    async fn start() -> Self {
        let (fx, sub) = keycloak_and_sts().await;
        let issuer = fx.keycloak().issuer_url();
        let gcp = fx.start_gcp().await;
        let ca = TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"));
        let credential = FederatedCredential::new(&issuer, &sub);
        let entra = EntraEmulator::builder()
            .tenant(TENANT)
            .tls(&ca)
            .app(App::new(APP).federated_credential(credential))
            .token_lifetime(LIFETIME)
            .start()
            .await
            .unwrap_or_else(|e| panic!("entra emulator: {e}"));
        fx.write(
            "entra-ca.pem",
            entra.ca_pem().unwrap_or_else(|| panic!("no CA")),
        );
        let entra = Arc::new(entra);
        fx.known.add_emulator(&entra);
        Self { fx, gcp, entra }
    }

    /// Every kind of output keyfed has, each in `out/` (the merged profile in `home/.aws/`),
    /// on five targets: AWS, an API token, a web identity token, Google Cloud (federated) and
    /// Azure (two scopes).
    fn every_output(&self) -> String {
        let token = |name: &str, audience: &str, scope: &str, kind: &str, path: &str| {
            format!(
                "[targets.{name}]\nissuer = \"corp\"\naudience = \"{audience}\"\nscope = \"{scope}\"\n\
                 min_token_lifetime = \"20s\"\noutputs = [{{ kind = \"{kind}\", path = \"{path}\" }}]\n\n"
            )
        };
        let aws = aws_target(
            &self.fx,
            "aws",
            "{ kind = \"aws-credentials\", path = \"out/aws/credentials\", profile = \"default\" },\n  \
             { kind = \"credential-process-json\", path = \"out/aws/process.json\" },\n  \
             { kind = \"aws-credentials\", path = \"home/.aws/credentials\", profile = \"keyfed\", merge = true }",
        );
        let gcp = format!(
            "[targets.gcp]\nissuer = \"corp\"\naudience = \"{GCP_AUD}\"\nscope = \"gcp-audience\"\n\
             min_token_lifetime = \"20s\"\noutputs = [\n  \
             {{ kind = \"gcp-access-token\", path = \"out/gcp/token\" }},\n  \
             {{ kind = \"gcp-access-token\", path = \"out/gcp/token.json\", format = \"json\" }},\n  \
             {{ kind = \"gcp-subject-token\", path = \"out/gcp/subject.jwt\" }},\n  \
             {{ kind = \"gcp-external-account\", path = \"out/gcp/external-account.json\" }},\n  \
             {{ kind = \"gcp-external-account\", path = \"out/gcp/external-account-exec.json\", credential_source = \"executable\" }},\n]\n\n\
             [targets.gcp.gcp]\nprovider = \"{PROVIDER}\"\nproject_id = \"{PROJECT_ID}\"\n\
             sts_url = \"{}\"\niam_url = \"{}\"\n\n",
            self.gcp.sts_url(),
            self.gcp.base_url(),
        );
        let azure = format!(
            "[targets.azure]\nissuer = \"corp\"\nscope = \"azure-audience\"\nmin_token_lifetime = \"20s\"\n\
             outputs = [\n  \
             {{ kind = \"azure-access-token\", path = \"out/azure/management.token\" }},\n  \
             {{ kind = \"azure-access-token\", path = \"out/azure/vault.json\", format = \"json\", scope = \"https://vault.azure.net\" }},\n  \
             {{ kind = \"azure-federated-token\", path = \"out/azure/federated.jwt\" }},\n]\n\n\
             [targets.azure.azure]\ntenant_id = \"{TENANT}\"\nclient_id = \"{APP}\"\n\
             scopes = [\"https://management.azure.com/.default\", \"https://vault.azure.net/.default\"]\n\
             authority_host = \"{}\"\nca_file = \"entra-ca.pem\"\n\n",
            self.entra.authority_host(),
        );
        aws + &token(
            "api",
            API_AUD,
            "api-audience",
            "token",
            "out/tokens/api.jwt",
        ) + &token(
            "web",
            AWS_AUD,
            "aws-audience",
            "web-identity-token",
            "out/tokens/web-identity.jwt",
        ) + &gcp
            + &azure
    }

    /// The issue order of a credential, as the emulator that issued it knows it.
    fn ranks(&self) -> impl Fn(&Issued) -> Option<usize> + use<> {
        let tokens = self.fx.keycloak().issued_tokens();
        let keys = sts_keys(&self.fx);
        let (gcp, entra) = (Arc::clone(&self.gcp), Arc::clone(&self.entra));
        let (gcp_issued, entra_issued) = (gcp.issued_tokens(), entra.issued_tokens());
        move |issued| match issued {
            Issued::Keycloak(token) => tokens.iter().position(|t| t == token),
            Issued::Sts(key) => keys.iter().position(|k| k == key),
            Issued::Gcp(token) => {
                let info = gcp.token_info(token)?;
                gcp_issued.iter().position(|t| *t == info)
            }
            Issued::Entra(token) => {
                let info = entra.token_info(token)?;
                entra_issued.iter().position(|t| *t == info)
            }
            Issued::Document => Some(0),
        }
    }

    /// The files of [`Clouds::every_output`], as their consumers read them.
    fn watched(&self) -> Vec<Watched> {
        let at = |name: &'static str, format: Format| {
            let path = self.fx.path(name);
            self.fx.known.add_file(path.clone(), SecretFile::Output);
            Watched { name, path, format }
        };
        vec![
            at(
                "out/aws/credentials",
                Format::AwsProfile { profile: "default" },
            ),
            at("out/aws/process.json", Format::ProcessJson),
            at(
                "home/.aws/credentials",
                Format::AwsMerged {
                    profile: "keyfed",
                    kept: USERS_FILE.to_owned(),
                },
            ),
            at("out/tokens/api.jwt", Format::KeycloakJwt),
            at("out/tokens/web-identity.jwt", Format::KeycloakJwt),
            at("out/gcp/token", Format::GcpRaw),
            at("out/gcp/token.json", Format::GcpJson),
            at("out/gcp/subject.jwt", Format::KeycloakJwt),
            at("out/gcp/external-account.json", Format::ExternalAccount),
            at("out/gcp/external-account.jwt", Format::KeycloakJwt),
            at(
                "out/gcp/external-account-exec.json",
                Format::ExternalAccount,
            ),
            at("out/azure/management.token", Format::AzureRaw),
            at("out/azure/vault.json", Format::AzureJson),
            at("out/azure/federated.jwt", Format::KeycloakJwt),
        ]
    }
}

/// The access key ids STS issued, oldest first.
fn sts_keys(fx: &Fixture) -> Vec<String> {
    fx.sts()
        .issued_credentials()
        .into_iter()
        .map(|c| c.access_key_id)
        .collect()
}

/// Successful refreshes a daemon's log records.
fn refreshes_in(log: &str) -> usize {
    log.lines().filter(|l| l.contains(" refreshed ")).count()
}

/// Temporary files of interrupted writes in the folders of `files`.
fn temporary_files(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders: Vec<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    folders.sort();
    folders.dedup();
    folders
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten())
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".keyfed-tmp-"))
        .map(|e| e.path())
        .collect()
}

/// The inode each file has now (`None`: missing).
fn inodes(files: &[PathBuf]) -> Vec<Option<u64>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| m.ino()))
        .collect()
}

/// When to kill a daemon.
enum Moment {
    /// This long after its start, before its first refresh.
    StartUp(Duration),
    /// This long after its first refresh, while it writes.
    Writing(Duration),
    /// This long after its start: during its first scheduled refresh (15 s in).
    Scheduled(Duration),
}

/// When to kill the next daemon: mostly while it writes the first round of credentials (which
/// takes `writes` from its first refresh), sometimes while it starts (`start_up` to its first
/// refresh), and now and then once it has refreshed on schedule.
fn kill_moment(rng: &mut StdRng, start_up: Duration, writes: Duration, cycle: usize) -> Moment {
    if cycle == 12 {
        return Moment::Scheduled(Duration::from_millis(rng.random_range(14_800..16_000)));
    }
    if rng.random_range(0..5) == 0 {
        Moment::StartUp(start_up.mul_f64(rng.random_range(0.0..1.0)))
    } else {
        Moment::Writing(writes.mul_f64(rng.random_range(0.0..1.2)))
    }
}

/// Waits until `daemon` has refreshed a credential.
async fn first_refresh(daemon: &mut Daemon) {
    wait_until_within(Duration::from_secs(30), "a refresh", async || {
        if let Some(status) = daemon.exited() {
            panic!(
                "{} exited ({status}):\n{}",
                daemon.what(),
                daemon.log_so_far()
            );
        }
        refreshes_in(&daemon.log_so_far()) > 0
    })
    .await;
}

/// Issue 11, part 2: SIGKILL at random moments across at least 200 refreshes, with every output
/// file read in a tight loop by two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_sigkill_during_refreshes_never_leaves_a_torn_or_older_file() {
    let clouds = Clouds::start().await;
    let fx = &clouds.fx;
    let seed = seed("issue11_sigkill_during_refreshes");
    let mut rng = StdRng::seed_from_u64(seed);
    fx.daemon_config(&clouds.every_output());
    std::fs::create_dir_all(fx.path("home/.aws")).unwrap_or_else(|e| panic!("{e}"));
    fx.write("home/.aws/credentials", USERS_FILE);
    let watched = clouds.watched();
    let paths: Vec<PathBuf> = watched.iter().map(|w| w.path.clone()).collect();
    let readers = Readers::start(watched, READERS);
    let started = Instant::now();

    // The first daemon runs until every output is written: when it first refreshes and how long
    // its writes take set the windows the kills aim at.
    let mut daemon = fx.spawn_run(&[], &[]);
    first_refresh(&mut daemon).await;
    let start_up = started.elapsed();
    wait_until_within(
        Duration::from_secs(30),
        "every output written",
        async || inodes(&paths).iter().all(Option::is_some),
    )
    .await;
    let writes = started.elapsed() - start_up;
    let mut refreshes = refreshes_in(&daemon.kill().await.stderr);
    let (mut kills, mut mid_write, mut scheduled) = (1, 0, 0);
    let mut temps = temporary_files(&paths).len();
    while refreshes < REFRESHES {
        // Bounded by kills, not time: 4 kills in 5 come after a refresh, so a daemon that keeps
        // refreshing after each kill gets there well within these. The wall bound only guards
        // against a hang on a busy machine.
        assert!(
            kills < MAX_KILLS && started.elapsed() < HANG_GUARD,
            "only {refreshes} refreshes after {kills} kills in {:?} (seed {seed})",
            started.elapsed()
        );
        let mut daemon = fx.spawn_run(&[], &[]);
        match kill_moment(&mut rng, start_up, writes, kills) {
            Moment::StartUp(after) => tokio::time::sleep(after).await,
            Moment::Writing(after) => {
                first_refresh(&mut daemon).await;
                tokio::time::sleep(after).await;
            }
            Moment::Scheduled(after) => {
                scheduled += 1;
                tokio::time::sleep(after).await;
            }
        }
        refreshes += refreshes_in(&daemon.kill().await.stderr);
        kills += 1;
        let now = temporary_files(&paths).len();
        mid_write += usize::from(now > temps);
        temps = now;
    }

    // A daemon started again meets the temporary files the kills left, old by now (as after a
    // reboot): it rewrites every output with a newer credential and removes them.
    let left = temporary_files(&paths);
    for temp in &left {
        crate::util::backdate(temp);
    }
    let before = inodes(&paths);
    let daemon = fx.daemon().await;
    wait_until_within(
        Duration::from_secs(30),
        "the restarted daemon to rewrite every output and remove the temporary files",
        async || {
            inodes(&paths)
                .iter()
                .zip(&before)
                .all(|(now, was)| now != was)
                && temporary_files(&paths).is_empty()
        },
    )
    .await;
    refreshes += refreshes_in(&daemon.stop().await.ok().stderr);
    let report = readers.finish();
    let elapsed = started.elapsed();
    check(&report, &clouds, seed);
    let reads = report.reads();
    println!(
        "{refreshes} refreshes, {kills} kills ({mid_write} left a temporary file, {scheduled} after a scheduled refresh), \
         {} temporary files removed on restart, {reads} reads, start-up {start_up:?}, writes {writes:?}, {elapsed:?}",
        left.len()
    );
    report::held(
        "Crash safety: SIGKILL during refreshes",
        "keyfed SIGKILLed at random moments (seeded) while 2 threads read every output file in a tight loop \
         (AWS profile, merged profile, credential_process JSON, token, web identity token, Google access token \
         raw and JSON, subject token, external_account file- and executable-sourced with its subject-token file, \
         Azure access tokens raw and JSON, federated token): no read empty, partial or unparsable; no file back \
         to an older credential (the issuing emulator's order, the issuer's expiry, or one held before); a restarted \
         daemon rewrites every output and removes the temporary files the kills left",
        &format!(
            "{refreshes} refreshes, {kills} kills ({mid_write} mid-write), {reads} reads, 0 bad reads, 0 regressions, \
             {} stale temporary files removed",
            left.len()
        ),
    );
}

/// Fails the test with every bad read and regression the readers saw.
fn check(report: &Report, clouds: &Clouds, seed: u64) {
    let bad = report.bad_reads();
    let regressions = report.regressions(clouds.ranks());
    let shown = |v: &[String]| v.iter().take(10).cloned().collect::<Vec<_>>().join("\n  ");
    assert!(
        bad.is_empty() && regressions.is_empty(),
        "seed {seed}: {} bad reads of {}:\n  {}\n{} regressions:\n  {}",
        bad.len(),
        report.reads(),
        shown(&bad.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()),
        regressions.len(),
        shown(&regressions)
    );
    for file in report.files.iter() {
        assert!(
            report.credentials_seen(file.name) > 0,
            "seed {seed}: no reader ever saw {}",
            file.name
        );
    }
}

/// keyfed's profiles in the file the AWS CLI writes.
const KEYFED_PROFILES: [&str; 2] = ["keyfed-1", "keyfed-2"];

/// The AWS CLI, installed by `tests/run` into `target/interop-venv` (as `interop.rs` needs it).
fn aws_cli() -> PathBuf {
    let aws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/aws");
    assert!(
        aws.exists(),
        "the AWS CLI is missing from {}: run tests/run, which installs it",
        aws.display()
    );
    aws
}

/// One `aws configure set` that finished.
#[derive(Debug, Clone)]
struct CliWrite {
    profile: String,
    key: &'static str,
    value: String,
}

/// Runs `aws configure set` in a loop on the shared credentials file `credentials` until `stop`:
/// mostly a new profile (the CLI appends it), every fourth time a new value in one profile it
/// keeps changing (the CLI rewrites the whole file in place). Counts the writes that finished in
/// `done`, and returns them.
async fn cli_loop(
    credentials: PathBuf,
    home: PathBuf,
    known: crate::util::Known,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Vec<CliWrite> {
    let aws = aws_cli();
    let mut writes = Vec::new();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let write = if i % 4 == 3 {
            CliWrite {
                profile: "cli-shared".into(),
                key: "aws_secret_access_key",
                value: format!("cli-shared-value-{i}"),
            }
        } else {
            CliWrite {
                profile: format!("cli-{i}"),
                key: "aws_access_key_id",
                value: format!("AKIACLI{i:013}"),
            }
        };
        let mut command = tokio::process::Command::new(&aws);
        command
            .args(["configure", "set", write.key, &write.value])
            .args(["--profile", &write.profile])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("AWS_SHARED_CREDENTIALS_FILE", &credentials)
            .env("AWS_CONFIG_FILE", home.join("cli/config"))
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let run = crate::util::process::run(
            "aws configure set",
            command,
            &known,
            crate::util::Serves::Nothing,
        )
        .await;
        assert_eq!(
            run.code,
            Some(0),
            "aws configure set failed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        writes.push(write);
        done.fetch_add(1, Ordering::SeqCst);
    }
    writes
}

/// An INI file's sections, each with its `key = value` lines, in file order.
fn sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), Vec::new()));
        } else if let (Some((k, v)), Some(section)) = (t.split_once('='), sections.last_mut()) {
            section.1.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    sections
}

/// What of the user's file, of the CLI's writes and of keyfed's profiles `text` lacks; keyfed's
/// profiles must hold credentials from `fresh` (issued by STS after the last restart).
fn lost(text: &str, writes: &[CliWrite], fresh: &[String]) -> Vec<String> {
    let mut lost = Vec::new();
    for (n, line) in USERS_FILE.lines().enumerate() {
        if !text.lines().any(|l| l == line) {
            lost.push(format!("line {n} of the user's own file"));
        }
    }
    let sections = sections(text);
    let value = |profile: &str, key: &str| {
        let found: Vec<&(String, Vec<(String, String)>)> = sections
            .iter()
            .filter(|(name, _)| name == profile)
            .collect();
        match found.as_slice() {
            [(_, keys)] => keys
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
            _ => vec![format!("{} [{profile}] sections", found.len())],
        }
    };
    let mut last: Vec<&CliWrite> = Vec::new();
    for write in writes {
        last.retain(|w| (w.profile.as_str(), w.key) != (write.profile.as_str(), write.key));
        last.push(write);
    }
    for write in last {
        if value(&write.profile, write.key) != [write.value.clone()] {
            lost.push(format!(
                "the CLI's {} in [{}] (its last value)",
                write.key, write.profile
            ));
        }
    }
    for profile in KEYFED_PROFILES {
        let key = value(profile, "aws_access_key_id");
        if key.len() != 1 || !fresh.contains(&key[0]) {
            lost.push(format!("keyfed's fresh aws_access_key_id in [{profile}]"));
        }
        for other in ["aws_secret_access_key", "aws_session_token"] {
            if value(profile, other).len() != 1 {
                lost.push(format!("keyfed's {other} in [{profile}]"));
            }
        }
    }
    lost
}

/// Sets its flag when dropped: a thread watching it stops even when the test fails first.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Reads `path` every few milliseconds until `stop`: how many reads, and the credentials keyfed merged
/// into it that they saw (so at least as many merges).
fn count_merges(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, usize)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::HashSet::new();
        let mut reads = 0;
        while !stop.load(Ordering::Relaxed) {
            // Merges come hundreds of milliseconds apart: reading every few is enough to see
            // each, and leaves the CPU to keyfed and the CLI.
            std::thread::sleep(Duration::from_millis(5));
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            reads += 1;
            for (name, keys) in sections(&text) {
                if let Some((_, key)) = keys.iter().find(|(k, _)| k == "aws_access_key_id")
                    && KEYFED_PROFILES.contains(&name.as_str())
                {
                    seen.insert(key.clone());
                }
            }
        }
        (reads, seen.len())
    })
}

/// Two keyfeds, each with its own configuration and control socket, merging one profile each
/// into `cli/credentials`; returns their configuration files.
fn keyfeds(fx: &Fixture) -> Vec<PathBuf> {
    fx.write_credentials();
    let issuer = crate::util::issuer("corp", "host-secret", "client_secret_basic")
        .replace("{issuer}", &fx.keycloak().issuer_url());
    KEYFED_PROFILES
        .iter()
        .map(|profile| {
            let output = format!(
                "{{ kind = \"aws-credentials\", path = \"cli/credentials\", profile = \"{profile}\", merge = true }}"
            );
            fx.write(
                &format!("{profile}.toml"),
                &format!(
                    "{issuer}\n[control]\nsocket = \"{profile}.sock\"\n\n{}",
                    aws_target(fx, "aws", &output)
                ),
            )
        })
        .collect()
}

/// Starts `keyfed run` with `config`.
fn spawn(fx: &Fixture, config: &Path) -> Daemon {
    fx.spawn(&["--config", &config.display().to_string(), "run"])
}

/// Merges keyfed started again because another program wrote the file meanwhile.
fn merged_again(log: &str) -> usize {
    log.matches(": merging again").count()
}

/// Kills and restarts the keyfed of `config` at random moments until `done`; returns how many
/// times it was killed, and how many merges it started again.
async fn kill_until(
    fx: &Fixture,
    config: &Path,
    seed: u64,
    (start_up, writes): (Duration, Duration),
    done: impl Fn() -> bool,
) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut kills, mut again) = (0, 0);
    while !done() {
        let mut daemon = spawn(fx, config);
        match kill_moment(&mut rng, start_up, writes, kills + 1) {
            Moment::StartUp(after) => tokio::time::sleep(after).await,
            // Never after a scheduled refresh: these loops end with the CLI's. Until somewhat
            // after the writes, so that most daemons merge before they die.
            Moment::Writing(_) | Moment::Scheduled(_) => {
                first_refresh(&mut daemon).await;
                tokio::time::sleep(writes.mul_f64(rng.random_range(0.0..1.5))).await;
            }
        }
        again += merged_again(&daemon.kill().await.stderr);
        kills += 1;
        // Down for a moment, as under systemd's RestartSec: the CLI gets the CPU to write.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1000))).await;
    }
    (kills, again)
}

/// Issue 11, part 2: two keyfeds merge a profile each into a user's credentials file (under
/// keyfed's lock) while the real AWS CLI writes it in a loop (`aws configure set`: no lock, in
/// place), and each keyfed is SIGKILLed at random moments while it merges: nothing of the
/// user's, the CLI's or keyfed's is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue11_the_aws_cli_and_keyfed_writing_one_credentials_file_lose_nothing() {
    let (fx, _) = keycloak_and_sts().await;
    let seed = seed("issue11_the_aws_cli_and_keyfed");
    let configs = keyfeds(&fx);
    std::fs::create_dir_all(fx.path("cli")).unwrap_or_else(|e| panic!("{e}"));
    let credentials = fx.write("cli/credentials", USERS_FILE);
    fx.known.add_file(credentials.clone(), SecretFile::AwsIni);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(Arc::clone(&stop));
    let merges = count_merges(credentials.clone(), Arc::clone(&stop));
    let started = Instant::now();
    let has_every_profile = |fresh: &[String]| {
        let text = std::fs::read_to_string(&credentials).unwrap_or_default();
        sections(&text)
            .iter()
            .filter(|(name, keys)| {
                KEYFED_PROFILES.contains(&name.as_str())
                    && keys
                        .iter()
                        .any(|(k, v)| k == "aws_access_key_id" && fresh.contains(v))
            })
            .count()
            == KEYFED_PROFILES.len()
    };

    // keyfed's profiles are in the file before the CLI starts, as in a file keyfed has kept for
    // a while: a CLI write that began before a merge can put back the values it read, never
    // take a profile out.
    let mut again_before = 0;
    let mut first: Vec<Daemon> = configs.iter().map(|c| spawn(&fx, c)).collect();
    first_refresh(&mut first[0]).await;
    let start_up = started.elapsed();
    wait_until_within(
        Duration::from_secs(30),
        "keyfed's profiles merged",
        async || has_every_profile(&sts_keys(&fx)),
    )
    .await;
    let writes = started.elapsed() - start_up;
    for daemon in first {
        again_before += merged_again(&daemon.kill().await.stderr);
    }

    let cli_done = Arc::new(AtomicUsize::new(0));
    let cli = tokio::spawn(cli_loop(
        credentials.clone(),
        fx.dir.path().to_owned(),
        fx.known.clone(),
        Arc::clone(&stop),
        Arc::clone(&cli_done),
    ));
    let cli_started = Instant::now();
    let done = || {
        let (writes, time) = (cli_done.load(Ordering::SeqCst), cli_started.elapsed());
        cli.is_finished()
            || writes >= CLI_WRITES
            || (time > CLI_TIME && writes >= CLI_WRITES_LEAST)
            || time > 2 * CLI_TIME
    };
    let loops = futures::future::join_all(configs.iter().enumerate().map(|(i, config)| {
        kill_until(
            &fx,
            config,
            seed.wrapping_add(i as u64),
            (start_up, writes),
            done,
        )
    }))
    .await;
    let kills = configs.len() + loops.iter().map(|(k, _)| k).sum::<usize>();
    let mut again = again_before + loops.iter().map(|(_, a)| a).sum::<usize>();
    stop.store(true, Ordering::SeqCst);
    let cli_writes = cli.await.unwrap_or_else(|e| panic!("the CLI loop: {e}"));

    // Once the CLI is done, the keyfeds started again merge fresh credentials.
    let issued_before = sts_keys(&fx).len();
    let last: Vec<Daemon> = configs.iter().map(|c| spawn(&fx, c)).collect();
    wait_until_within(
        Duration::from_secs(30),
        "keyfed's fresh credentials merged",
        async || has_every_profile(&sts_keys(&fx)[issued_before..]),
    )
    .await;
    for daemon in last {
        again += merged_again(&daemon.stop().await.ok().stderr);
    }
    let (reads, merged) = merges
        .join()
        .unwrap_or_else(|_| panic!("the reader panicked"));
    let text = std::fs::read_to_string(&credentials).unwrap_or_else(|e| panic!("{e}"));
    let lost = lost(&text, &cli_writes, &sts_keys(&fx)[issued_before..]);
    let profiles = sections(&text).len();
    assert!(
        lost.is_empty(),
        "seed {seed}: after {} CLI writes, {merged} keyfed merges and {kills} kills, the file lost:\n  {}",
        cli_writes.len(),
        lost.join("\n  ")
    );
    assert!(
        cli_writes.len() >= CLI_WRITES_LEAST && merged >= 10,
        "too little happened: {} CLI writes, {merged} keyfed merges",
        cli_writes.len()
    );
    println!(
        "{} CLI writes, {merged} keyfed merges seen ({again} merged again after a CLI write), {kills} kills, \
         {reads} reads, {profiles} profiles in the end, {:?}",
        cli_writes.len(),
        started.elapsed()
    );
    report::held(
        "Crash safety: merged credentials file with the AWS CLI writing",
        "two keyfeds merging a profile each into a user's shared credentials file while the AWS CLI \
         (`aws configure set` in a loop: new profiles appended, one profile rewritten in place, no lock) \
         writes it and each keyfed is SIGKILLed at random moments: in the end every line of the user's \
         file (comments included), every profile and last value the CLI wrote, and keyfed's profiles with \
         fresh credentials are there, each profile once",
        &format!(
            "{} CLI writes, {merged} keyfed merges ({again} redone after a CLI write), {kills} kills, 0 lost profiles",
            cli_writes.len()
        ),
    );
}
