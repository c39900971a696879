//! The `pincoderouting` binary: parses the command line, loads the configuration, sets up
//! logging and runs the driver.
#![allow(clippy::disallowed_methods)]
// The panic policy of src/lib.rs: no unwrap, expect, unchecked indexing or panics.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use clap::Parser;
use pincoderouting::call::verdict::Pin;
use pincoderouting::cli::{Cli, Command, ContactsAction, GenCodec, GenMethod, LogFormat};
use pincoderouting::config::{self, Config};
use pincoderouting::driver::Server;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

fn init_logging(cli: &Cli) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .map_err(|e| format!("--log-level '{}': {e}", cli.log_level))?;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match cli.log_format {
        LogFormat::Json => b.json().with_current_span(true).init(),
        LogFormat::Text => b.init(),
    }
    Ok(())
}

/// The organizations' country codes in a configuration file (empty when it cannot be read:
/// `--country-code` then has to say).
struct CountryCodes {
    by_org: std::collections::HashMap<String, String>,
    default: Option<String>,
}

impl CountryCodes {
    fn of(&self, org: &str) -> Option<String> {
        self.by_org.get(org).cloned()
    }
}

fn country_codes(path: &Path) -> CountryCodes {
    let parsed = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| config::parse(&t, &path.display().to_string()).ok());
    let Some(c) = parsed else {
        return CountryCodes {
            by_org: Default::default(),
            default: None,
        };
    };
    CountryCodes {
        by_org: c
            .organizations
            .iter()
            .map(|o| (o.name.clone(), o.country_code.clone()))
            .collect(),
        default: c
            .default_organization
            .and_then(|i| c.organizations.get(i))
            .map(|o| o.country_code.clone()),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, config::ConfigError> {
    let path = path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    config::load(Path::new(&path))
}

/// Forwards each SIGTERM or SIGINT to `tx`: the first starts a graceful drain, the second
/// ends at once.
fn forward_stop_signals(tx: tokio::sync::mpsc::Sender<()>) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            }
        }
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
}

/// `gen-pcap`: writes the capture and says what it holds (how many keys, never which).
#[allow(clippy::too_many_arguments)]
fn gen_pcap(
    digits: &str,
    method: GenMethod,
    codec: GenCodec,
    pt: u8,
    on_ms: u32,
    off_ms: u32,
    lead_ms: u32,
    pause_ms: u32,
    output: &Path,
) -> ExitCode {
    use pincoderouting::sip::sdp::Codec;
    use pincoderouting::tools::pcapgen::{dtmf_capture, Method, Timing, PAUSE};
    let codec = match codec {
        GenCodec::Pcmu => Codec::Pcmu,
        GenCodec::Pcma => Codec::Pcma,
    };
    let how = match method {
        GenMethod::Rfc4733 => Method::Rfc4733 { te_pt: pt },
        GenMethod::Inband => Method::Inband,
    };
    let timing = Timing {
        lead_ms,
        on_ms,
        off_ms,
        pause_ms,
    };
    let bytes = match dtmf_capture(digits, how, codec, timing) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::write(output, &bytes) {
        eprintln!("error: {}: {e}", output.display());
        return ExitCode::from(2);
    }
    let keys = digits.chars().filter(|c| *c != PAUSE).count();
    let what = match how {
        Method::Rfc4733 { te_pt } => format!(
            "RFC 4733 events (PT {te_pt}) beside {} silence",
            codec.name()
        ),
        Method::Inband => format!("in-band tones in {}", codec.name()),
    };
    println!("{}: {keys} keys as {what}", output.display());
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { ref path } => match load(path.clone()) {
            Ok(c) => {
                println!(
                    "ok: {} listen address(es), max {} calls, RTP {}-{}, prompts from {}",
                    c.sip.listen.len(),
                    c.sip.max_calls,
                    c.media.rtp_port_min,
                    c.media.rtp_port_max,
                    c.prompts.dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Contacts {
            action:
                ContactsAction::SetPin {
                    ref file,
                    ref phone,
                    ref id,
                    ref name,
                    ref org,
                    ref country_code,
                    ref config,
                },
        } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the PIN from standard input");
                return ExitCode::from(2);
            }
            let Some(pin) = Pin::from_digits(line.trim()) else {
                eprintln!("error: the PIN must be 1 to 32 keys 0-9 (A-D allowed)");
                return ExitCode::from(2);
            };
            let create = match (id, name, org) {
                (Some(i), Some(n), Some(o)) => Some((i.clone(), n.clone(), o.clone())),
                _ => None,
            };
            let codes = country_codes(config);
            // The organization's country code, else the default organization's, else 1.
            let cc = country_code
                .clone()
                .or_else(|| org.as_deref().and_then(|o| codes.of(o)))
                .or_else(|| codes.default.clone())
                .unwrap_or_else(|| "1".into());
            match pincoderouting::crm::file::set_pin(file, phone, &pin, create, &cc) {
                Ok(id) => {
                    println!("PIN set for contact {id} ({phone})");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Contacts {
            action:
                ContactsAction::Import {
                    ref csv,
                    ref file,
                    ref org,
                    ref country_code,
                    ref config,
                    keep_csv,
                },
        } => {
            let from_stdin = csv.as_os_str() == "-";
            let text = if from_stdin {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).map(|_| t)
            } else {
                std::fs::read_to_string(csv)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", csv.display());
                    return ExitCode::from(2);
                }
            };
            let codes = country_codes(config);
            let cc_of = |o: &str| country_code.clone().or_else(|| codes.of(o));
            match pincoderouting::crm::file::import_csv(file, &text, org.as_deref(), &cc_of) {
                Ok(r) => {
                    println!(
                        "imported into {}: {} added, {} updated",
                        file.display(),
                        r.added,
                        r.updated
                    );
                    if !from_stdin && !keep_csv {
                        match std::fs::remove_file(csv) {
                            Ok(()) => println!("deleted {} (it held PINs in clear)", csv.display()),
                            Err(e) => eprintln!(
                                "warning: could not delete {} ({e}): it holds PINs in clear",
                                csv.display()
                            ),
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Contacts {
            action: ContactsAction::HashPin,
        } => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the PIN from standard input");
                return ExitCode::from(2);
            }
            let t = line.trim();
            let pin = t
                .chars()
                .all(|c| c.is_ascii_digit())
                .then(|| Pin::from_digits(t))
                .flatten();
            let Some(pin) = pin else {
                eprintln!("error: the PIN must be 1 to 32 digits");
                return ExitCode::from(2);
            };
            match pincoderouting::call::verdict::hash_pin(&pin) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::DtmfDetect { ref file, json } => {
            let bytes = match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            match pincoderouting::tools::dtmf_detect::run(&bytes, json, std::time::Instant::now()) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::GenPcap {
            ref digits,
            method,
            codec,
            pt,
            on_ms,
            off_ms,
            lead_ms,
            pause_ms,
            ref output,
        } => gen_pcap(
            digits, method, codec, pt, on_ms, off_ms, lead_ms, pause_ms, output,
        ),
        Command::Serve { ref config } => {
            if let Err(e) = init_logging(&cli) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            let config_path = config
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
            let config = match load(Some(config_path.clone())) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let path = config_path.clone();
            rt.block_on(async {
                let server = match Server::bind(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                // SIGHUP and POST /reload: reload the configuration file; a broken one is
                // refused and the running configuration stays.
                let reloader = server.reloader();
                let reload: pincoderouting::driver::ReloadHook =
                    Arc::new(move || match config::load(&path) {
                        Ok(c) => {
                            reloader.reload(Arc::new(c));
                            Ok(format!("reloaded {}", path.display()))
                        }
                        Err(e) => {
                            let why = e.to_string();
                            reloader.refused(&why);
                            Err(why)
                        }
                    });
                #[cfg(unix)]
                {
                    let reload = reload.clone();
                    tokio::spawn(async move {
                        use tokio::signal::unix::{signal, SignalKind};
                        let Ok(mut hup) = signal(SignalKind::hangup()) else {
                            return;
                        };
                        while hup.recv().await.is_some() {
                            // Reading and checking the file blocks: not on a runtime thread.
                            let reload = reload.clone();
                            let _ = tokio::task::spawn_blocking(move || reload()).await;
                        }
                    });
                }
                let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(4);
                forward_stop_signals(stop_tx);
                server.run(stop_rx, Some(reload)).await;
                ExitCode::SUCCESS
            })
        }
    }
}
