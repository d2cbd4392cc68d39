//! The NQS web UI in a real headless browser: Debian `chromium` driven by
//! `chromedriver` over WebDriver (the `fantoccini` client, plain HTTP on
//! loopback). `voxplane nqs --read` analyses a fixture capture and serves
//! it; the test signs in through the login form, checks the history,
//! opens a call (SIP ladder, charts), plays a leg's audio, downloads the
//! pcap, and checks that a reseller cannot open another domain's call and
//! that a share link opens its call only.
//!
//! Needs `chromium`, `chromedriver` (Debian `chromium-driver`) and the
//! fixtures; skips otherwise unless `VOXPLANE_REQUIRE_TOOLS` /
//! `VOXPLANE_REQUIRE_FIXTURES` is set.

mod nqs_common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nqs_common::{Kill, free_port, start_nqs, token};

use fantoccini::{Client, ClientBuilder, Locator};

/// The call of the fixture with two G.711 legs, and its domain.
const CALL: &str = "25672@192.168.105.110";
const CALL_DOMAIN: &str = "192.168.105.105";
/// Another domain of the same capture.
const OTHER_DOMAIN: &str = "bestel.com";
/// Calls in `derived_multicall_4calls.pcap` as the analyser finds them.
const CALLS: usize = 13;

/// Starts chromedriver on a free port and waits until it answers.
fn start_chromedriver() -> (Kill, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

async fn browser(driver_port: u16, downloads: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                "--mute-audio", "--no-first-run", "--disable-extensions",
            ],
            "prefs": {
                "download.default_directory": downloads.to_str().unwrap(),
                "download.prompt_for_download": false,
            },
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session")
}

/// Polls `script` (a JS expression) until it is truthy; returns its value.
async fn wait_js(c: &Client, what: &str, script: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c
            .execute(&format!("return ({script});"), vec![])
            .await
            .unwrap();
        let truthy = match &v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => false,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, what: Locator<'_>) {
    c.find(what).await.unwrap().click().await.unwrap();
}

async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(base).await.unwrap();
    let _ = c.execute("sessionStorage.clear(); return 1;", vec![]).await;
    c.goto(base).await.unwrap();
    let form = c.wait().for_element(Locator::Id("login")).await.unwrap();
    form.find(Locator::Css("textarea"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn run(c: &Client, base: &str, data: &Path, downloads: &Path) {
    // 1. Sign in as admin: the history lists every call of the capture.
    sign_in(c, base, &token(data, &["--admin"])).await;
    let rows = wait_js(
        c,
        "the history",
        &format!("document.querySelectorAll('#calls tbody tr').length == {CALLS} && {CALLS}"),
    )
    .await;
    assert_eq!(rows, CALLS);
    let ids = js(
        c,
        "return [...document.querySelectorAll('#calls tbody tr')].map(r => r.dataset.callId);",
    )
    .await;
    assert!(ids.as_array().unwrap().iter().any(|v| v == CALL), "{ids}");
    // MOS is coloured; sorting by MOS ascending puts calls without media
    // first.
    assert!(c.find(Locator::Css("#calls .mos.good")).await.is_ok());
    click(c, Locator::Css("th[data-sort=mos]")).await;
    wait_js(c, "sorted by MOS", "location.search.includes('sort=mos')").await;
    // A filter: one number.
    c.goto(&format!("{base}/?number=2504")).await.unwrap();
    let filtered = wait_js(
        c,
        "the filtered history",
        "document.querySelector('#calls tbody') && [...document.querySelectorAll('#calls tbody tr td:nth-child(2), #calls tbody tr td:nth-child(3)')].length",
    )
    .await;
    assert!(filtered.as_u64().unwrap() >= 2);
    let all_match = js(c, "return [...document.querySelectorAll('#calls tbody tr')].every(r => (r.children[1].textContent + r.children[2].textContent).includes('2504'));").await;
    assert_eq!(all_match, true);

    // 2. Open the call from the list: ladder, charts, legs.
    c.goto(base).await.unwrap();
    let link = c
        .wait()
        .for_element(Locator::Css(&format!(
            "tr[data-call-id='{CALL}'] a.call-link"
        )))
        .await
        .unwrap();
    link.click().await.unwrap();
    wait_js(
        c,
        "the ladder",
        "document.querySelectorAll('#ladder g.msg').length",
    )
    .await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        format!("/calls/{}", CALL.replace('@', "%40")).as_str()
    );
    let ladder = js(c, "return [...document.querySelectorAll('#ladder g.msg text:last-of-type')].map(t => t.textContent);").await;
    let ladder: Vec<&str> = ladder
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(ladder.first().unwrap().starts_with("INVITE"), "{ladder:?}");
    assert!(ladder.iter().any(|l| l.starts_with("200")), "{ladder:?}");
    assert!(ladder.iter().any(|l| l.starts_with("ACK")), "{ladder:?}");
    let legs = js(c, "return document.querySelectorAll('.leg').length;").await;
    assert_eq!(legs, 2);
    // Two charts per leg, each with its series drawn from interval rows.
    let series = js(
        c,
        "return document.querySelectorAll('.leg svg.chart path.series').length;",
    )
    .await;
    assert_eq!(series, 2 * 3, "jitter mean+max and loss for each leg");

    // 3. Audio: load leg 1's WAV and check it plays.
    click(c, Locator::Css(".leg .load-audio")).await;
    let duration = wait_js(
        c,
        "the audio metadata",
        "(() => { const a = document.querySelector('.leg audio'); return a.readyState >= 1 && a.duration; })()",
    )
    .await;
    assert!(duration.as_f64().unwrap() > 5.0, "{duration}");
    let _ = c
        .execute(
            "const a = document.querySelector('.leg audio'); a.muted = true; a.play(); return 1;",
            vec![],
        )
        .await;
    wait_js(
        c,
        "the audio to play",
        "document.querySelector('.leg audio').currentTime > 0.2",
    )
    .await;

    // 4. The pcap link downloads the call's pcap.
    click(c, Locator::Id("pcap-link")).await;
    let size = wait_js(
        c,
        "the pcap download",
        "document.getElementById('pcap-link').dataset.downloaded",
    )
    .await;
    let size: u64 = size.as_str().unwrap().parse().unwrap();
    assert!(size > 100_000, "{size}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        let done = std::fs::read_dir(downloads)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "pcap"));
        if let Some(f) = done {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no pcap in {}",
            downloads.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(&bytes[..4], b"\xd4\xc3\xb2\xa1", "a pcap");

    // 5. A share link from the page opens that call alone.
    click(c, Locator::Id("share")).await;
    let share = c
        .wait()
        .for_element(Locator::Id("share-link"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(share.starts_with(&format!("{base}/calls/")), "{share}");

    // 6. A reseller of another domain: not in its history, not by deep link.
    sign_in(c, base, &token(data, &["--reseller", OTHER_DOMAIN])).await;
    let rows = wait_js(
        c,
        "the reseller's history",
        "document.querySelector('#calls tbody, #empty') && document.querySelectorAll('#calls tbody tr').length + 1",
    )
    .await;
    let rows = rows.as_u64().unwrap() - 1;
    assert!(rows > 0 && rows < CALLS as u64, "{rows}");
    let listed = js(
        c,
        "return [...document.querySelectorAll('#calls tbody tr')].map(r => r.dataset.callId);",
    )
    .await;
    assert!(!listed.as_array().unwrap().iter().any(|v| v == CALL));
    c.goto(&format!("{base}/calls/{}", CALL.replace('@', "%40")))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Id("not-found"))
        .await
        .unwrap();
    assert!(c.find(Locator::Id("ladder")).await.is_err());
    // The reseller of the call's domain opens it.
    sign_in(c, base, &token(data, &["--reseller", CALL_DOMAIN])).await;
    c.goto(&format!("{base}/calls/{}", CALL.replace('@', "%40")))
        .await
        .unwrap();
    wait_js(
        c,
        "the ladder",
        "document.querySelectorAll('#ladder g.msg').length",
    )
    .await;

    // 7. The share link, in a fresh session: its call, and the history is
    //    that call only.
    let _ = c.execute("sessionStorage.clear(); return 1;", vec![]).await;
    c.goto(&share).await.unwrap();
    wait_js(
        c,
        "the shared call",
        "document.querySelectorAll('#ladder g.msg').length",
    )
    .await;
    let url = c.current_url().await.unwrap();
    assert!(
        url.query().is_none(),
        "the token leaves the address bar: {url}"
    );
    c.goto(base).await.unwrap();
    wait_js(
        c,
        "the redirect to the shared call",
        "location.pathname.startsWith('/calls/') && document.querySelectorAll('#ladder g.msg').length",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_headless_chromium() {
    let Some(fixtures) = testkit::fixtures() else {
        return;
    };
    if !testkit::tool("chromium") || !testkit::tool("chromedriver") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (_nqs, port) = start_nqs(
        &data,
        &fixtures.join("pcaps/derived_multicall_4calls.pcap"),
        &[],
        &[],
        CALLS,
    );
    let (_driver, driver_port) = start_chromedriver();
    let c = browser(driver_port, &downloads).await;
    let base = format!("http://127.0.0.1:{port}");
    // In a task, so the browser is closed even when a check fails.
    let session = c.clone();
    let task = tokio::spawn(async move {
        tokio::time::timeout(
            Duration::from_secs(90),
            run(&session, &base, &data, &downloads),
        )
        .await
    });
    let result = task.await;
    let _ = c.close().await;
    match result {
        Ok(r) => r.expect("the browser test finished in time"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
