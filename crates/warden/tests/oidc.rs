//! Single sign-on end to end against a real OpenID provider: the npm
//! package `oidc-provider` run by Node.js on 127.0.0.1, its login and
//! consent forms driven by a scripted browser (tests/oidc/browser.py) that
//! the CLI starts as `$BROWSER`, or that the test runs for `--headless`.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

fn ensure_packages() {
    npm_packages(&oidc_dir(), "node_modules/oidc-provider");
}

struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(redirect_uris: &str) -> Provider {
        ensure_packages();
        let mut child = Command::new("node")
            .arg("provider.js")
            .current_dir(oidc_dir())
            .env("OIDC_REDIRECT_URIS", redirect_uris)
            .env("OIDC_CLIENT_SECRET", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node provider.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the OIDC provider did not start within 30 s");
        let issuer = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected provider output {line:?}"))
            .to_string();
        Provider { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECRET: &str = "warden-test-secret-0123456789";

/// Posts the device form as another site would: argv URL, code, CA file.
const FORGE: &str = r#"
import ssl, sys, urllib.error, urllib.parse, urllib.request
url, code, ca = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)
cases = [
    ({"Origin": "https://evil.example"}, {"user_code": code}),
    ({"Origin": "https://evil.example"}, {"user_code": code, "confirm": "yes"}),
    ({}, {"user_code": code, "confirm": "yes", "csrf": "made-up"}),
]
for headers, form in cases:
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), headers=headers)
    try:
        print("STATUS", urllib.request.urlopen(req, context=ctx, timeout=15).status)
    except urllib.error.HTTPError as e:
        print("STATUS", e.code)
"#;

fn connector(dir: &Path, name: &str, issuer: &str, redirect: &str, timeout: &str) -> PathBuf {
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &f,
        format!(
            r#"kind: oidc
version: v1
metadata:
  name: {name}
spec:
  issuer_url: {issuer}
  client_id: warden
  client_secret_file: {secret}
  scopes: [email, profile, groups]
  redirect_url:
    - https://proxy.eu.example.com/v1/oidc/callback
    - {redirect}
  login_timeout: {timeout}
  claims_to_roles:
    - claim: groups
      value: "^db-(.*)$"
      roles: ["db-$1"]
    - claim: groups
      value: dev
      roles: [access]
"#,
            secret = secret_file.display()
        ),
    )
    .unwrap();
    f
}

fn browser_cmd(login: &str, cafile: &Path) -> String {
    format!(
        "python3 {} --login {login} --cafile {}",
        oidc_dir().join("browser.py").display(),
        cafile.display()
    )
}

fn sso_login(c: &Cluster, home: &str, connector: &str, browser: &str) -> Out {
    c.run_env(
        home,
        &[
            "login", "--proxy", &c.proxy, "--ca-pin", &c.pin, "--auth", connector,
        ],
        None,
        &[("BROWSER", browser)],
    )
}

/// `warden login --headless`: the URL and code it prints, and the process.
fn headless(c: &Cluster, home: &str, connector: &str) -> (Child, String, String) {
    let mut child = Command::new(WARDEN)
        .args([
            "login",
            "--proxy",
            &c.proxy,
            "--ca-pin",
            &c.pin,
            "--auth",
            connector,
            "--headless",
        ])
        .env("WARDEN_HOME", c.dir.join(home))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut url, mut code) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while url.is_none() || code.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("headless login printed no URL and code");
        let t = line.trim();
        if t.starts_with("https://") && t.ends_with("/web/device") {
            url = Some(t.to_string());
        } else if t.len() == 9 && t.as_bytes()[4] == b'-' {
            code = Some(t.to_string());
        }
    }
    (child, url.unwrap(), code.unwrap())
}

fn status(c: &Cluster, home: &str) -> serde_json::Value {
    let out = c
        .run_as(home, &["status", "--format", "json"], None)
        .expect_ok();
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn oidc_single_sign_on() {
    let dir = temp_dir("oidc");
    let c = Cluster::start(&dir);
    // The cluster CA, for the scripted browser to verify the proxy.
    let s = c.add_user("carol", "access", "root");
    c.login("carol", "carol", &totp(&s, 30)).expect_ok();
    let cafile = c.keys_dir("carol").join("cas.pem");
    let redirect = format!("https://{}/v1/oidc/callback", c.proxy);
    let idp = Provider::start(&redirect);

    // A role that uses a claim in a template.
    let role = dir.join("db-admins.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v1\nmetadata:\n  name: db-admins\nspec:\n  allow:\n    logins: [root, \"{{external.preferred_username}}\"]\n    node_labels:\n      '*': '*'\n",
    )
    .unwrap();
    c.admin(&["roles", "apply", "-f", role.to_str().unwrap()])
        .expect_ok();
    let f = connector(&dir, "okta", &idp.issuer, &redirect, "2m");
    c.admin(&["connectors", "apply", "-f", f.to_str().unwrap()])
        .expect_ok();
    let ls = c.admin(&["connectors", "ls"]).expect_ok();
    assert!(
        ls.stdout.contains("okta") && ls.stdout.contains(&idp.issuer),
        "{}",
        ls.stdout
    );
    let shown = c.admin(&["get", "oidc", "okta"]).expect_ok();
    assert!(
        !shown.stdout.contains(SECRET),
        "the client secret leaked: {}",
        shown.stdout
    );
    // Only oidc documents go through 'connectors apply'.
    c.admin(&["connectors", "apply", "-f", role.to_str().unwrap()])
        .expect_err("not a oidc document");

    // 1. Browser login: groups map to roles, claims become traits.
    let out = sso_login(&c, "alice", "okta", &browser_cmd("alice", &cafile)).expect_ok();
    assert!(out.stdout.contains("Logged in"), "{}", out.all());
    assert!(
        out.stderr.contains("http://"),
        "the URL is always printed: {}",
        out.stderr
    );
    let st = status(&c, "alice");
    assert_eq!(st["user"], "alice@example.com");
    assert_eq!(st["roles"], serde_json::json!(["access", "db-admins"]));
    assert_eq!(
        st["traits"]["external.groups"],
        serde_json::json!(["db-admins", "dev"])
    );
    assert_eq!(
        st["traits"]["external.email"],
        serde_json::json!(["alice@example.com"])
    );
    let logins = st["logins"].as_array().unwrap();
    assert!(
        logins.contains(&"root".into()) && logins.contains(&"alice".into()),
        "{st}"
    );
    // The certificate works with stock ssh.
    let out = c
        .ssh(
            "alice",
            "alice@example.com",
            "root",
            &[],
            "echo sso-ok",
            None,
        )
        .expect_ok();
    assert!(out.stdout.contains("sso-ok"));
    let ev = c.events();
    let login = ev
        .iter()
        .find(|e| e["type"] == "user.login" && e["user"] == "alice@example.com")
        .expect("SSO login audited");
    assert_eq!(login["code"], "WA1000I");
    assert_eq!(login["fields"]["connector"], "okta");
    assert_eq!(login["fields"]["method"], "oidc");
    assert_eq!(login["fields"]["subject"], "alice");

    // 2. Refusals, each with a message that says why.
    for (account, needle) in [
        ("bob", "map to no Warden role"),
        ("noemail", "sent no email claim"),
        ("aud-other", "issued for"),
        ("aud-broad", "broader"),
    ] {
        let out = sso_login(&c, account, "okta", &browser_cmd(account, &cafile));
        out.expect_err(needle);
    }
    assert!(
        c.events().iter().any(|e| e["code"] == "WA1000W"
            && e["fields"]["connector"] == "okta"
            && e["message"].as_str().unwrap_or("").contains("another-app")),
        "refused SSO logins are audited"
    );

    // 3. Headless: a URL and a code; the browser can be anywhere.
    let (child, url, code) = headless(&c, "alice2", "okta");
    // A forged post of the code from another site (login CSRF: the
    // victim's browser would complete the attacker's login) is refused,
    // with or without a confirmation or a made-up token, and the login
    // stays pending for the browser that really opened the page.
    let forged = run_program(
        "python3",
        &[
            "-c".into(),
            FORGE.into(),
            url.clone(),
            code.clone(),
            cafile.display().to_string(),
        ],
        None,
    )
    .expect_ok();
    assert_eq!(
        forged.stdout.matches("STATUS 403").count(),
        3,
        "{}",
        forged.all()
    );
    let b = run_program(
        "python3",
        &[
            oidc_dir().join("browser.py").display().to_string(),
            "--login".into(),
            "alice".into(),
            "--cafile".into(),
            cafile.display().to_string(),
            "--user-code".into(),
            code.clone(),
            url.clone(),
        ],
        None,
    )
    .expect_ok();
    assert!(
        b.stdout.contains("Logged in as alice@example.com"),
        "{}",
        b.all()
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status(&c, "alice2")["user"], "alice@example.com");

    // 4. The callback cannot be replayed, nor the code reused.
    let callback = b
        .stderr
        .lines()
        .chain(b.stdout.lines())
        .find_map(|l| {
            l.find("https://")
                .map(|i| &l[i..])
                .filter(|u| u.contains("/v1/oidc/callback?"))
        })
        .map(|u| u.split_whitespace().next().unwrap().to_string())
        .unwrap_or_else(|| panic!("no callback URL in the browser's steps: {}", b.all()));
    let replay = run_program(
        "python3",
        &[
            oidc_dir().join("browser.py").display().to_string(),
            "--cafile".into(),
            cafile.display().to_string(),
            callback,
        ],
        None,
    );
    assert!(!replay.ok, "{}", replay.all());
    assert!(
        replay.stdout.contains("expired") || replay.stdout.contains("already used"),
        "{}",
        replay.all()
    );
    let again = run_program(
        "python3",
        &[
            oidc_dir().join("browser.py").display().to_string(),
            "--cafile".into(),
            cafile.display().to_string(),
            "--user-code".into(),
            code,
            url,
        ],
        None,
    );
    assert!(
        !again.ok && again.stdout.contains("unknown or expired code"),
        "{}",
        again.all()
    );

    // 5. An expired login link is refused, and the waiting client says so.
    let f = connector(&dir, "short", &idp.issuer, &redirect, "3s");
    c.admin(&["connectors", "apply", "-f", f.to_str().unwrap()])
        .expect_ok();
    let late = dir.join("late-browser.sh");
    let late_out = dir.join("late-browser.out");
    std::fs::write(
        &late,
        format!(
            "#!/bin/sh\nsleep 5\n{} \"$@\" > {} 2>&1\necho \"exit=$?\" >> {}\n",
            browser_cmd("alice", &cafile),
            late_out.display(),
            late_out.display()
        ),
    )
    .unwrap();
    let out = sso_login(&c, "late", "short", &format!("sh {}", late.display()));
    out.expect_err("not completed in time");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let t = std::fs::read_to_string(&late_out).unwrap_or_default();
        if t.contains("exit=") || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("exit=1") && text.contains("expired"),
        "{text}"
    );

    // 6. Provider down: a clear error, at once.
    let f = connector(&dir, "down", "http://127.0.0.1:1", &redirect, "2m");
    c.admin(&["connectors", "apply", "-f", f.to_str().unwrap()])
        .expect_ok();
    let t0 = Instant::now();
    sso_login(&c, "down", "down", "true").expect_err("cannot reach identity provider down");
    assert!(t0.elapsed() < Duration::from_secs(15));
}

/// Single sign-on from the web UI in Chromium: the login page offers the
/// connector, the provider's forms are filled, and the browser comes back
/// logged in with the claims' roles. The return link does nothing in a
/// browser that did not start the login.
#[test]
fn web_ui_single_sign_on_in_chromium() {
    let dir = temp_dir("oidc-web");
    let c = Cluster::start(&dir);
    let redirect = format!("https://{}/v1/oidc/callback", c.proxy);
    let idp = Provider::start(&redirect);
    let f = connector(&dir, "okta", &idp.issuer, &redirect, "2m");
    c.admin(&["connectors", "apply", "-f", f.to_str().unwrap()])
        .expect_ok();
    let saw = browser_run(
        "sso.js",
        &[
            ("WARDEN_URL", format!("https://{}/", c.proxy)),
            ("CONNECTOR", "okta".to_string()),
            ("ACCOUNT", "alice".to_string()),
        ],
    );
    assert_eq!(saw["buttons"], serde_json::json!(["Log in with okta"]));
    assert_eq!(saw["provider_page"], idp.issuer, "{saw}");
    assert_eq!(
        saw["whoami"], "alice@example.com (access)",
        "groups mapped to roles: {saw}"
    );
    assert_eq!(saw["servers_shown"], true, "{saw}");
    assert_eq!(saw["back_at"], format!("https://{}/", c.proxy));
    assert_eq!(saw["done_url_seen"], true, "{saw}");
    assert_eq!(saw["replay_status"], 400, "{saw}");
    assert!(
        saw["replay_text"]
            .as_str()
            .unwrap()
            .contains("does not complete the login this browser started"),
        "another browser's completion value finishes nothing: {saw}"
    );
    assert_eq!(
        saw["other_whoami"], "alice@example.com (access)",
        "its own link still works after the wrong one: {saw}"
    );
    assert_eq!(saw["other_browser"], 400, "{saw}");
    assert!(
        saw["other_browser_text"]
            .as_str()
            .unwrap()
            .contains("did not start this login"),
        "{saw}"
    );
    let events = c.events();
    assert!(
        events.iter().any(|e| e["type"] == "user.login"
            && e["user"] == "alice@example.com"
            && e["success"] == true
            && e["fields"]["method"] == "oidc"),
        "{events:?}"
    );
}
