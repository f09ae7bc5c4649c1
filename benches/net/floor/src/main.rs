//! netfloor: the Python-free side of oxloop's network benchmarks (benches/net.py).
//!
//! ```text
//! netfloor echo-server ADDR      the floor: a pure-Rust mio echo server
//! netfloor http-server ADDR      the floor of the HTTP rows: keep-alive hello-world
//! netfloor tls-echo-server ADDR --libssl PATH --cert PEM
//!                                the floor of the TLS rows: the echo over OpenSSL, loaded
//!                                from PATH at run time (the libssl CPython's `_ssl` uses)
//! netfloor tls-probe PATH        exits 0 when tls-echo-server can load and use PATH
//! netfloor client ADDR --conns N --size BYTES (--duration SECS | --messages M)
//!                  [--warmup SECS] [--stall-timeout SECS] [--churn]
//! ```
//!
//! ADDR is `tcp:HOST:PORT` or `unix:PATH`. The servers print `ready ADDR` once listening and run
//! until killed (the TLS server: until `quit` or the end of stdin, answering `cpu` lines with its
//! CPU time; tls.rs). The client is the one load generator for every server, Python or Rust (see
//! client.rs for its protocol with the parent and how it validates the echo); it prints JSON
//! lines and exits with status 1 on a failed run (`{"status":"FAIL","error":...}`), 2 on bad
//! arguments.

mod client;
mod net;
mod openssl;
mod server;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use net::Addr;

const USAGE: &str = "usage: netfloor echo-server ADDR | http-server ADDR \
| tls-echo-server ADDR --libssl PATH --cert PEM | tls-probe PATH | client ADDR \
--conns N --size BYTES (--duration SECS | --messages M) [--warmup SECS] [--stall-timeout SECS] [--churn]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => return usage("no command"),
    };
    match cmd {
        "echo-server" | "http-server" => {
            let addr = match rest {
                [a] => match Addr::parse(a) {
                    Ok(a) => a,
                    Err(e) => return usage(&e),
                },
                _ => return usage("a server takes exactly one ADDR"),
            };
            let service = if cmd == "echo-server" {
                server::Service::Echo
            } else {
                server::Service::Http
            };
            match server::serve(&addr, service) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("netfloor {cmd} {addr}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "tls-echo-server" => {
            let (addr, libssl, pem) = match parse_tls_server(rest) {
                Ok(parsed) => parsed,
                Err(e) => return usage(&e),
            };
            match tls::serve(&addr, &libssl, &pem) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("netfloor {cmd} {addr}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        "tls-probe" => match rest {
            [path] => match tls::probe(std::path::Path::new(path)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("netfloor tls-probe: {e}");
                    ExitCode::FAILURE
                }
            },
            _ => usage("tls-probe takes exactly one PATH"),
        },
        "client" => match parse_client(rest) {
            Ok(cfg) => match client::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One JSON line the parent can show; `{:?}` quotes and escapes the text
                    // well enough for JSON (messages are ASCII).
                    println!("{{\"status\":\"FAIL\",\"error\":{e:?}}}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => usage(&e),
        },
        "-h" | "--help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => usage(&format!("unknown command {other:?}")),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("netfloor: {why}\n{USAGE}");
    ExitCode::from(2)
}

fn parse_tls_server(args: &[String]) -> Result<(Addr, PathBuf, PathBuf), String> {
    let (addr, opts) = args.split_first().ok_or("tls-echo-server needs an ADDR")?;
    let (mut libssl, mut pem) = (None, None);
    let mut it = opts.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--libssl" => libssl = Some(PathBuf::from(value)),
            "--cert" => pem = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok((
        Addr::parse(addr)?,
        libssl.ok_or("give --libssl PATH")?,
        pem.ok_or("give --cert PEM")?,
    ))
}

fn parse_client(args: &[String]) -> Result<client::Config, String> {
    let (addr, opts) = args.split_first().ok_or("client needs an ADDR")?;
    let mut cfg = client::Config {
        addr: Addr::parse(addr)?,
        conns: 1,
        size: 1024,
        duration: None,
        messages: None,
        warmup: Duration::ZERO,
        stall_timeout: Duration::from_secs(10),
        churn: false,
    };
    let mut it = opts.iter();
    while let Some(flag) = it.next() {
        if flag == "--churn" {
            cfg.churn = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--conns" => cfg.conns = value.parse().map_err(|e| bad(&e))?,
            "--size" => cfg.size = value.parse().map_err(|e| bad(&e))?,
            "--messages" => cfg.messages = Some(value.parse().map_err(|e| bad(&e))?),
            "--duration" => cfg.duration = Some(seconds(value).map_err(|e| bad(&e))?),
            "--warmup" => cfg.warmup = seconds(value).map_err(|e| bad(&e))?,
            "--stall-timeout" => cfg.stall_timeout = seconds(value).map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if cfg.conns == 0 || cfg.size == 0 {
        return Err("--conns and --size must be at least 1".into());
    }
    if cfg.duration.is_none() && cfg.messages.is_none() {
        return Err("give --duration or --messages".into());
    }
    Ok(cfg)
}

fn seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(s).map_err(|e| format!("{e}"))
}
