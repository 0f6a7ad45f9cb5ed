//! Durable writes: the SQLite `Backend` (revision + change log + kv row per
//! write, WAL, synchronous=FULL) vs a bare SQLite INSERT with the same
//! durability settings.

use std::sync::Arc;
use std::time::Duration;
use warden_bench::{rate, temp_dir};
use warden_store::{Backend, SqliteBackend};

fn main() {
    let dir = temp_dir("store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let backend: Arc<dyn Backend> = Arc::new(
        rt.block_on(async { SqliteBackend::open(&dir.join("state.db")) })
            .expect("open"),
    );
    let value = vec![b'x'; 512];
    let mut i = 0u64;
    let warden = rate(Duration::from_secs(3), 200, || {
        i += 1;
        rt.block_on(backend.put(&format!("/bench/{i}"), value.clone(), None))
            .expect("put");
    });

    let conn = rusqlite::Connection::open(dir.join("raw.db")).expect("open raw");
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    )
    .expect("schema");
    let mut j = 0u64;
    let raw = rate(Duration::from_secs(3), 200, || {
        j += 1;
        conn.execute(
            "INSERT INTO kv VALUES (?1, ?2)",
            rusqlite::params![format!("/bench/{j}"), value],
        )
        .expect("insert");
    });
    println!("store_put.warden_backend {warden:.0} writes/s");
    println!("store_put.raw_sqlite {raw:.0} writes/s");
    println!("store_put.ratio {:.2} x", warden / raw);
    let _ = std::fs::remove_dir_all(dir);
}
