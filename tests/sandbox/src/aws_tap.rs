//! A pass-through TCP proxy in front of the AWS emulator that notes every AWS request sent through
//! it (the query protocol's `Action=` that opens each request body) with the moment it passed.
//! Start one per agent replica and point that replica's `AWS_ENDPOINT_URL` at it: the test then
//! knows which replica sent which AWS call, and when. Bytes are forwarded unchanged.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One AWS call as it passed the tap.
#[derive(Clone, Debug)]
pub struct TappedCall {
    pub at: Instant,
    pub action: String,
}

impl TappedCall {
    /// Changes AWS state (anything but Describe*/Get*/List*).
    pub fn is_write(&self) -> bool {
        !["Describe", "Get", "List"].iter().any(|p| self.action.starts_with(p))
    }
}

type Calls = Arc<Mutex<Vec<TappedCall>>>;

pub struct AwsTap {
    endpoint: String,
    calls: Calls,
    accept: JoinHandle<()>,
}

impl AwsTap {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the AWS tap")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let calls: Calls = Arc::default();
        let noted = calls.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let noted = noted.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = relay(client, server, noted).await;
                    }
                });
            }
        });
        Ok(Self { endpoint, calls, accept })
    }

    /// What to set as the replica's `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn calls(&self) -> Vec<TappedCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The writes that passed the tap at or after `since`.
    pub fn writes_since(&self, since: Instant) -> Vec<TappedCall> {
        self.calls().into_iter().filter(|c| c.is_write() && c.at >= since).collect()
    }
}

impl Drop for AwsTap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn relay(client: TcpStream, server: TcpStream, calls: Calls) -> std::io::Result<()> {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let requests = async {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = from_client.read(&mut buf).await?;
            if n == 0 {
                return to_server.shutdown().await;
            }
            seen.extend_from_slice(&buf[..n]);
            note_actions(&mut seen, &calls);
            to_server.write_all(&buf[..n]).await?;
        }
    };
    let responses = tokio::io::copy(&mut from_server, &mut to_client);
    let (a, b) = tokio::join!(requests, responses);
    a.and(b.map(drop))
}

/// Notes each complete `\r\n\r\nAction=Name&` (a request body's start) in `seen`, then keeps only
/// the tail that could begin the next one.
fn note_actions(seen: &mut Vec<u8>, calls: &Calls) {
    const MARK: &[u8] = b"\r\n\r\nAction=";
    let mut consumed = 0;
    while let Some(start) = find(&seen[consumed..], MARK) {
        let name_start = consumed + start + MARK.len();
        let Some(len) = seen[name_start..].iter().position(|&b| b == b'&') else {
            consumed += start;
            break;
        };
        let action = String::from_utf8_lossy(&seen[name_start..name_start + len]).into_owned();
        if let Ok(mut calls) = calls.lock() {
            calls.push(TappedCall { at: Instant::now(), action });
        }
        consumed = name_start + len;
    }
    if find(&seen[consumed..], MARK).is_none() {
        // Keep just enough to recognise a mark split across reads.
        consumed = consumed.max(seen.len().saturating_sub(MARK.len() + 64));
    }
    seen.drain(..consumed);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_split_across_reads() {
        let calls: Calls = Arc::default();
        let mut seen = Vec::new();
        let request = b"POST / HTTP/1.1\r\nHost: x\r\n\r\nAction=RegisterTargets&Version=2015-12-01&TargetGroupArn=a";
        for chunk in request.chunks(7) {
            seen.extend_from_slice(chunk);
            note_actions(&mut seen, &calls);
        }
        seen.extend_from_slice(b"POST / HTTP/1.1\r\n\r\nAction=DescribeTargetHealth&V=1");
        note_actions(&mut seen, &calls);
        let actions: Vec<_> = calls.lock().unwrap().iter().map(|c| (c.action.clone(), c.is_write())).collect();
        assert_eq!(actions, vec![("RegisterTargets".into(), true), ("DescribeTargetHealth".into(), false)]);
    }

    #[tokio::test]
    async fn forwards_both_ways_and_notes_the_call() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].ends_with(b"Action=CreateTags&Version=1"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.unwrap();
        });
        let tap = AwsTap::start(&upstream_url).await.unwrap();
        let mut client = TcpStream::connect(tap.endpoint().trim_start_matches("http://")).await.unwrap();
        client.write_all(b"POST / HTTP/1.1\r\nContent-Length: 27\r\n\r\nAction=CreateTags&Version=1").await.unwrap();
        let mut response = vec![0u8; 64];
        let n = client.read(&mut response).await.unwrap();
        assert_eq!(&response[..n], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        assert_eq!(tap.calls().iter().map(|c| c.action.as_str()).collect::<Vec<_>>(), ["CreateTags"]);
    }
}
