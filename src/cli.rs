//! The command line (clap): `serve`, `check-config`, `contacts`, `dtmf-detect`, `gen-pcap`.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// pincoderouting: verify a caller's security PIN and route the call.
#[derive(Debug, Parser)]
#[command(
    name = "pincoderouting",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("PINCODEROUTING_GIT_REVISION"), ")"),
    about
)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `debug`, `pincoderouting=trace`).
    #[arg(long, default_value = "info", global = true)]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SIP service.
    Serve {
        /// Configuration file (default: sip-config/pincoderouting.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit (0 = valid).
    CheckConfig {
        /// Configuration file (default: sip-config/pincoderouting.toml).
        path: Option<PathBuf>,
    },
    /// Manage the contacts of the embedded file CRM.
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
    },
    /// Print the DTMF digits in a WAV recording (8 kHz mono; 16-bit PCM, mu-law or A-law)
    /// or, per RTP stream, in a pcap/pcapng capture (telephone-events and in-band audio).
    DtmfDetect {
        /// The WAV file or capture.
        file: PathBuf,
        /// One JSON object per digit per line: {"digit":"5","start_ms":120,"end_ms":220}.
        #[arg(long)]
        json: bool,
    },
    /// Write an RTP capture (pcap) of DTMF keys that SIPp plays with `play_pcap_audio`:
    /// the tester's kit makes one per PIN (see scenarios/README.md).
    GenPcap {
        /// The keys: 0-9 * # A-D; a ',' is a pause of --pause-ms (e.g. "1111#,4821#").
        #[arg(long)]
        digits: String,
        /// RFC 4733 telephone-events beside codec silence, or in-band dual tones.
        #[arg(long, value_enum)]
        method: GenMethod,
        /// The audio codec (payload type 0 or 8).
        #[arg(long, value_enum, default_value_t = GenCodec::Pcmu)]
        codec: GenCodec,
        /// Payload type of the telephone-events (96-127; rfc4733 only).
        #[arg(long, default_value_t = 101)]
        pt: u8,
        /// How long each key is held, ms.
        #[arg(long, default_value_t = 100)]
        on_ms: u32,
        /// Silence after each key, ms.
        #[arg(long, default_value_t = 100)]
        off_ms: u32,
        /// Silence before the first key, ms.
        #[arg(long, default_value_t = 400)]
        lead_ms: u32,
        /// Silence for each ',' in --digits, ms.
        #[arg(long, default_value_t = 1000)]
        pause_ms: u32,
        /// The capture to write.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
}

/// `gen-pcap --method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenMethod {
    Rfc4733,
    Inband,
}

/// `gen-pcap --codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenCodec {
    Pcmu,
    Pcma,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["p", "--log-format", "json", "serve", "--config", "x.toml"]);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(matches!(c.command, Command::Serve { config: Some(_) }));
        let c = Cli::parse_from([
            "p", "gen-pcap", "--digits", "4821#", "--method", "rfc4733", "--pt", "96", "-o",
            "x.pcap",
        ]);
        assert!(matches!(
            c.command,
            Command::GenPcap {
                method: GenMethod::Rfc4733,
                codec: GenCodec::Pcmu,
                pt: 96,
                on_ms: 100,
                ..
            }
        ));
    }
}

#[derive(Debug, Subcommand)]
pub enum ContactsAction {
    /// Set a contact's PIN: reads the PIN from standard input (never from the command line,
    /// where it would show in `ps` and shell history) and stores its argon2id hash.
    SetPin {
        /// The contacts file (default: sip-config/contacts.toml).
        #[arg(long, default_value = "sip-config/contacts.toml")]
        file: PathBuf,
        /// The contact's phone number, in any common format (`+15551234567`,
        /// `(555) 123-4567`, `06 1234 5678`): numbers without their country code are read
        /// with `--country-code`, else the organization's in the configuration.
        #[arg(long)]
        phone: String,
        /// Country calling code for numbers written without one (e.g. `1`, `44`, `39`).
        #[arg(long)]
        country_code: Option<String>,
        /// The configuration whose organizations give the country codes.
        #[arg(long, default_value = "sip-config/pincoderouting.toml")]
        config: PathBuf,
        /// Add the contact if no contact has this number: its id.
        #[arg(long, requires_all = ["name", "org"])]
        id: Option<String>,
        /// Name of the added contact.
        #[arg(long)]
        name: Option<String>,
        /// Organization of the added contact.
        #[arg(long)]
        org: Option<String>,
    },
    /// Import contacts from a CSV file with a header row: `id`, `name`, `organization`,
    /// `phones` (several separated by `;`, any common format) and `pin`. Each PIN is stored
    /// only as its argon2id hash; a contact with the same id is replaced. The CSV holds
    /// PINs in clear: it is deleted after a successful import unless `--keep-csv`.
    Import {
        /// The CSV file (`-` = standard input).
        #[arg(long)]
        csv: PathBuf,
        /// The contacts file (default: sip-config/contacts.toml).
        #[arg(long, default_value = "sip-config/contacts.toml")]
        file: PathBuf,
        /// The organization of rows without an `organization` column or value.
        #[arg(long)]
        org: Option<String>,
        /// Country calling code for numbers written without one (default: each
        /// organization's `country_code` in the configuration).
        #[arg(long)]
        country_code: Option<String>,
        /// The configuration whose organizations give the country codes.
        #[arg(long, default_value = "sip-config/pincoderouting.toml")]
        config: PathBuf,
        /// Leave the CSV file in place after the import.
        #[arg(long)]
        keep_csv: bool,
    },
    /// Print the argon2id hash of a PIN read from standard input: what to store in a CRM's
    /// PIN field instead of the PIN (`$argon2id$...` is accepted wherever a PIN is read).
    HashPin,
}
