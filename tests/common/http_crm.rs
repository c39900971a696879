//! A real HTTP/1.1 server standing in for a CRM: each request gets what the test set
//! for its path (JSON, a status, a hang, a dropped connection, or whatever a handler
//! answers: a fake PSA with its own routes); requests are recorded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == &name.to_ascii_lowercase())
            .map(|(_, v)| v.as_str())
    }
}

/// A handler's answer.
#[derive(Debug, Clone, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Resp {
    pub fn json(body: impl Into<String>) -> Resp {
        Resp {
            status: 200,
            body: body.into(),
            ..Default::default()
        }
    }
    pub fn status(status: u16) -> Resp {
        Resp {
            status,
            ..Default::default()
        }
    }
}

/// Answers requests by route.
pub type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

/// How the CRM answers.
#[derive(Clone)]
pub enum Behave {
    /// A handler answers each request.
    Handle(Handler),
    Json(String),
    Status(u16),
    /// Accept and never answer.
    Hang,
    /// Answer `n` times with a 503, then with the JSON.
    FailThen(u32, String),
    /// A verify webhook: verified iff the POSTed pin is this one.
    VerifyPin(String),
}

impl std::fmt::Debug for Behave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Behave::Handle(_) => f.write_str("Handle"),
            Behave::Json(j) => write!(f, "Json({j})"),
            Behave::Status(c) => write!(f, "Status({c})"),
            Behave::Hang => f.write_str("Hang"),
            Behave::FailThen(n, j) => write!(f, "FailThen({n}, {j})"),
            Behave::VerifyPin(_) => f.write_str("VerifyPin"),
        }
    }
}

#[derive(Default)]
struct State {
    behave: Option<Behave>,
    requests: Vec<(String, Vec<(String, String)>)>,
    bodies: Vec<String>,
    served: u32,
}

/// The server; runs until dropped with the process.
pub struct HttpCrm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl HttpCrm {
    pub fn start(behave: Behave) -> HttpCrm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            behave: Some(behave),
            ..Default::default()
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let st = st.clone();
                std::thread::spawn(move || serve(stream, st));
            }
        });
        HttpCrm { addr, state }
    }

    pub fn set(&self, behave: Behave) {
        let mut s = self.state.lock().unwrap();
        s.behave = Some(behave);
        s.served = 0;
    }

    /// Bodies of every request so far.
    pub fn bodies(&self) -> Vec<String> {
        self.state.lock().unwrap().bodies.clone()
    }

    /// (path, headers) of every request so far.
    pub fn requests(&self) -> Vec<(String, Vec<(String, String)>)> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}/contacts?phone={{phone}}&org={{org}}", self.addr)
    }
}

fn serve(stream: TcpStream, st: Arc<Mutex<State>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let method = line.split_whitespace().next().unwrap_or("").to_string();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut body = vec![0u8; len];
        let _ = reader.read_exact(&mut body);
        let req = Req {
            method,
            path: path.clone(),
            headers: headers.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let behave = {
            let mut s = st.lock().unwrap();
            s.requests.push((path, headers));
            s.bodies.push(String::from_utf8_lossy(&body).into_owned());
            s.served += 1;
            match s.behave.clone() {
                Some(Behave::FailThen(n, _)) if s.served <= n => Behave::Status(503),
                Some(Behave::FailThen(_, j)) => Behave::Json(j),
                Some(Behave::VerifyPin(pin)) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    let ok = v["pin"] == pin.as_str();
                    Behave::Json(format!(
                        "{{\"verified\":{ok},\"contact\":{{\"id\":\"crm-9\"}}}}"
                    ))
                }
                Some(b) => b,
                None => Behave::Status(500),
            }
        };
        let mut extra = Vec::new();
        let (status, body) = match behave {
            Behave::Handle(h) => {
                let r = h(&req);
                if !r.delay.is_zero() {
                    std::thread::sleep(r.delay);
                }
                extra = r.headers;
                (r.status, r.body)
            }
            Behave::Json(j) => (200, j),
            Behave::Status(c) => (c, String::new()),
            Behave::Hang => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Behave::FailThen(..) | Behave::VerifyPin(_) => unreachable!(),
        };
        let extra: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
