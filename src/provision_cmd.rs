//! Provisioning commands against a data directory's SBUS store: `domain`, `user`,
//! `trunk`, `dialplan` and `cdr` (see `docs/sip-provisioning.md`).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use control::dialplan::{CallInfo, CallSource};
use control::provision::{ANY_DOMAIN, Provisioning};
use sbus::record::{Placement, Trunk, TrunkAuth};

/// The provisioning subcommands (flattened into the top-level command list).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// SIP domains (tenants).
    Domain {
        #[command(subcommand)]
        cmd: DomainCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Subscribers of a domain.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// SIP trunks (PSTN peers).
    Trunk {
        #[command(subcommand)]
        cmd: TrunkCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Dialplans: load a file, or test which rule a call hits.
    Dialplan {
        #[command(subcommand)]
        cmd: DialplanCmd,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Call detail records.
    Cdr {
        #[command(subcommand)]
        cmd: CdrCmd,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// The data directory holding the SBUS store.
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// Data directory (the SBUS store of `voxplane up`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "voxplane-data",
        global = true
    )]
    data_dir: PathBuf,
}

/// `voxplane domain …`
#[derive(Subcommand, Debug)]
pub enum DomainCmd {
    /// Add (or replace) a domain.
    Add {
        /// Domain name, e.g. example.com.
        name: String,
        /// Regions its data may live in (comma-separated); everywhere if absent.
        #[arg(long, value_delimiter = ',')]
        placement: Vec<String>,
    },
    /// List domains.
    List,
}

/// `voxplane user …`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add (or replace) a subscriber; only digest HA1s are stored.
    Add {
        /// Address of record, user@domain.
        aor: String,
        /// Password.
        #[arg(long)]
        password: String,
        /// Display name.
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// List subscribers.
    List {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

/// `voxplane trunk …`
#[derive(Subcommand, Debug)]
pub enum TrunkCmd {
    /// Add (or replace) a trunk.
    Add {
        /// Trunk name.
        name: String,
        /// Host name or address of the peer.
        #[arg(long)]
        host: String,
        /// Port.
        #[arg(long, default_value_t = 5060)]
        port: u16,
        /// udp, tcp or tls.
        #[arg(long, default_value = "udp")]
        transport: String,
        /// Source addresses trusted as this trunk (CIDR; repeatable).
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allow_ip: Vec<String>,
        /// Digest user name (with --password).
        #[arg(long, requires = "password")]
        username: Option<String>,
        /// Digest password (with --username).
        #[arg(long, requires = "username")]
        password: Option<String>,
        /// Allowed codecs, in preference order (comma-separated).
        #[arg(long, value_delimiter = ',')]
        codecs: Vec<String>,
        /// OPTIONS health-check interval in seconds (0: off).
        #[arg(long, default_value_t = 30)]
        options_ping: u32,
    },
    /// List trunks.
    List,
}

/// `voxplane dialplan …`
#[derive(Subcommand, Debug)]
pub enum DialplanCmd {
    /// Check and store a dialplan file (docs/dialplan.md).
    Load {
        /// The TOML file.
        file: PathBuf,
        /// Its domain; without it, the default plan of domains that have none.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Show which rule a call would hit and what it would do.
    Test {
        /// Domain.
        #[arg(long)]
        domain: String,
        /// Calling number or user.
        #[arg(long)]
        from: String,
        /// Called number or user.
        #[arg(long)]
        to: String,
        /// Source address of the call (a trunk's address makes it a trunk call).
        #[arg(long)]
        source_ip: Option<IpAddr>,
        /// Treat the caller as this trunk.
        #[arg(long, conflicts_with = "source_ip")]
        trunk: Option<String>,
        /// When (RFC 3339, e.g. 2026-11-25T09:30:00+01:00, or Unix ms); default now.
        #[arg(long)]
        at: Option<String>,
    },
}

/// `voxplane cdr …`
#[derive(Subcommand, Debug)]
pub enum CdrCmd {
    /// Write CDRs as CSV to standard output.
    Export {
        /// Only this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Calls started at or after (RFC 3339 or Unix ms).
        #[arg(long)]
        from: Option<String>,
        /// Calls started before (RFC 3339 or Unix ms).
        #[arg(long)]
        to: Option<String>,
    },
}

/// Runs a provisioning command.
pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Domain { cmd, dir } => domain(&open(dir)?, cmd),
        Command::User { cmd, dir } => user(&open(dir)?, cmd),
        Command::Trunk { cmd, dir } => trunk(&open(dir)?, cmd),
        Command::Dialplan { cmd, dir } => dialplan(open(dir)?, cmd),
        Command::Cdr { cmd, dir } => cdr(&open(dir)?, cmd),
    }
}

fn domain(p: &Provisioning, cmd: &DomainCmd) -> Result<()> {
    match cmd {
        DomainCmd::Add { name, placement } => {
            let placement = if placement.is_empty() {
                Placement::Global
            } else {
                Placement::Regions(placement.clone())
            };
            p.add_domain(name, placement)?;
            println!("domain {} added", name.to_ascii_lowercase());
        }
        DomainCmd::List => {
            for d in p.domains()? {
                println!("{}\t{:?}", d.name, d.placement);
            }
        }
    }
    Ok(())
}

fn user(p: &Provisioning, cmd: &UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Add {
            aor,
            password,
            display_name,
        } => {
            let s = p.add_user(aor, password, display_name)?;
            println!("user {}@{} added", s.user, s.domain);
        }
        UserCmd::List { domain } => {
            for s in p.users(domain.as_deref())? {
                println!("{}@{}\t{}", s.user, s.domain, s.display_name);
            }
        }
    }
    Ok(())
}

fn trunk(p: &Provisioning, cmd: &TrunkCmd) -> Result<()> {
    match cmd {
        TrunkCmd::Add {
            name,
            host,
            port,
            transport,
            allow_ip,
            username,
            password,
            codecs,
            options_ping,
        } => {
            let auth = username
                .clone()
                .zip(password.clone())
                .map(|(username, password)| TrunkAuth { username, password });
            p.add_trunk(&Trunk {
                name: name.clone(),
                host: host.clone(),
                port: *port,
                transport: transport.to_ascii_lowercase(),
                allow_ips: allow_ip.clone(),
                auth,
                codecs: codecs.clone(),
                options_ping_s: *options_ping,
            })?;
            println!("trunk {name} added");
        }
        TrunkCmd::List => {
            for t in p.trunks()? {
                println!(
                    "{}\t{}:{}/{}\tallow={}\tdigest={}\tcodecs={}",
                    t.name,
                    t.host,
                    t.port,
                    t.transport,
                    t.allow_ips.join(","),
                    t.auth.as_ref().map_or("-", |a| a.username.as_str()),
                    t.codecs.join(",")
                );
            }
        }
    }
    Ok(())
}

fn dialplan(p: Provisioning, cmd: &DialplanCmd) -> Result<()> {
    match cmd {
        DialplanCmd::Load { file, domain } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let domain = domain.as_deref().unwrap_or(ANY_DOMAIN);
            let plan = p
                .load_dialplan(domain, &text)
                .with_context(|| format!("{}", file.display()))?;
            println!("dialplan of {domain} loaded: {} rules", plan.len());
        }
        DialplanCmd::Test {
            domain,
            from,
            to,
            source_ip,
            trunk,
            at,
        } => dialplan_test(
            p,
            domain,
            from,
            to,
            *source_ip,
            trunk.as_deref(),
            at.as_deref(),
        )?,
    }
    Ok(())
}

fn cdr(p: &Provisioning, cmd: &CdrCmd) -> Result<()> {
    match cmd {
        CdrCmd::Export { domain, from, to } => {
            let filter = control::cdr::Filter {
                domain: domain.clone(),
                from_ms: from.as_deref().map(parse_time).transpose()?,
                to_ms: to.as_deref().map(parse_time).transpose()?,
            };
            let mut out = std::io::stdout().lock();
            control::cdr::write_csv(p.store(), &filter, &mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

fn dialplan_test(
    p: Provisioning,
    domain: &str,
    from: &str,
    to: &str,
    source_ip: Option<IpAddr>,
    trunk: Option<&str>,
    at: Option<&str>,
) -> Result<()> {
    let plan = p.dialplan(domain)?;
    let trunks = p.trunks()?;
    let by_ip = source_ip.and_then(|ip| {
        trunks.iter().find(|t| {
            t.allow_ips
                .iter()
                .filter_map(|c| c.parse::<control::dialplan::Cidr>().ok())
                .any(|c| c.contains(ip))
        })
    });
    let source = match (trunk, by_ip) {
        (Some(t), _) => CallSource::Trunk(t),
        (None, Some(t)) => CallSource::Trunk(&t.name),
        (None, None) if p.user(domain, from)?.is_some() => CallSource::User(from),
        (None, None) => CallSource::Unknown,
    };
    let now = match at {
        Some(t) => parse_time(t)?,
        None => unix_ms_now(),
    };
    let call = CallInfo {
        to,
        from,
        source,
        ip: source_ip,
    };
    let d = plan.evaluate(&call, now);
    println!("source: {source:?}");
    println!(
        "matched: {}",
        if d.matched.is_empty() {
            "-".into()
        } else {
            d.matched.join(" -> ")
        }
    );
    println!("rule: {}", d.rule.as_deref().unwrap_or("-"));
    println!("number: {}", d.number);
    println!("action: {}", d.action);
    Ok(())
}

fn open(dir: &DataDir) -> Result<Provisioning> {
    Ok(Provisioning::new(Arc::new(open_store(&dir.data_dir)?)))
}

fn open_store(dir: &Path) -> Result<sbus::store::Store> {
    sbus::store::Store::open(dir, sbus::types::MemberId(1))
        .with_context(|| format!("opening the SBUS store in {}", dir.display()))
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Unix ms, or RFC 3339 `YYYY-MM-DDTHH:MM[:SS](Z|±HH:MM)`.
fn parse_time(s: &str) -> Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || anyhow::anyhow!("time {s:?}: expected RFC 3339 (2026-11-25T09:30:00Z) or Unix ms");
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, mo, da) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(Ok(y)), Some(Ok(m)), Some(Ok(d)), None)
            if (1..=12).contains(&m) && (1..=31).contains(&d) =>
        {
            (y, m, d)
        }
        _ => return Err(bad()),
    };
    let (clock, offset_s) = if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        (
            c,
            sign * (h.parse::<i64>()? * 3600 + m.parse::<i64>()? * 60),
        )
    } else {
        bail!("time {s:?}: add a time zone (Z or ±HH:MM)");
    };
    let mut c = clock.split(':').map(str::parse::<i64>);
    let (h, mi, se) = match (c.next(), c.next(), c.next()) {
        (Some(Ok(h)), Some(Ok(m)), None) => (h, m, 0),
        (Some(Ok(h)), Some(Ok(m)), Some(Ok(s))) => (h, m, s),
        _ => return Err(bad()),
    };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    u64::try_from(secs * 1000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20+01:00").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2023-11-14T17:13:20-05:00").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(parse_time("2024-02-29T00:00Z").unwrap(), 1_709_164_800_000);
        assert_eq!(parse_time("1700000000000").unwrap(), 1_700_000_000_000);
        assert!(parse_time("2023-11-14T22:13:20").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
