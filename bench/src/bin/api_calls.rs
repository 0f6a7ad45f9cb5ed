//! Auth API calls through the proxy, sequentially, as the profile's user:
//! one client reused (its kept-alive connection skips the TLS handshake)
//! against a new client per call (a handshake each time, as before
//! connections were pooled). Same run, same calls.
//!
//! Usage: api_calls WARDEN_HOME N

use std::time::Instant;
use warden_client::login::auth_client;
use warden_client::profile::ProfileStore;
use warden_types::endpoints;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (home, n): (&str, usize) = (&args[1], args[2].parse()?);
    let store = ProfileStore::new(home.into());
    let profile = store.current()?.expect("a logged-in profile");
    let call = |c: warden_client::http::ApiClient| async move {
        c.call(&endpoints::WHOAMI, &()).await.expect("whoami");
    };
    let shared = auth_client(&store, &profile)?;
    call(shared.clone()).await;
    let t = Instant::now();
    for _ in 0..n {
        call(shared.clone()).await;
    }
    let pooled = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        call(auth_client(&store, &profile)?).await;
    }
    let fresh = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("api_call.pooled_ms {pooled:.2}");
    println!("api_call.new_connection_ms {fresh:.2}");
    println!(
        "api_call.ratio {:.2} x (pooled / new connection time)",
        pooled / fresh
    );
    Ok(())
}
