//! A small OTLP/HTTP receiver for the tracing end-to-end tests: it keeps every export that
//! arrives (its request line and content type, and its JSON body) and answers 200; and reading
//! the spans and their attributes out of what it kept.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::addr;

/// An OTLP/HTTP receiver on `port`: every `POST` body it gets (parsed as JSON) is kept, and
/// answered 200.
pub fn start_otlp_receiver(port: u16) -> Arc<Mutex<Vec<(String, Value)>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(addr(port)).unwrap();
    let kept = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let (mut len, mut ctype) = (0usize, String::new());
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h == "\r\n" || h.is_empty() {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap(),
                        "content-type" => ctype = v.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                kept.lock().unwrap().push((
                    format!("{} {ctype}", line.trim_end()),
                    serde_json::from_slice(&body).expect("an OTLP JSON body"),
                ));
                let mut w = conn;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                );
            });
        }
    });
    got
}

/// The spans of every export `got` so far (`resourceSpans[].scopeSpans[].spans[]`).
pub fn spans(got: &Mutex<Vec<(String, Value)>>) -> Vec<Value> {
    let got = got.lock().unwrap();
    let mut all = Vec::new();
    for (_, doc) in got.iter() {
        for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                all.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    all
}

/// The value of a span's attribute `key` (its `{"stringValue": …}` or `{"intValue": …}`
/// object), if the span has it.
pub fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| &a["value"])
}
