//! TLS to PostgreSQL: `sslmode` in the database URL is honoured (the test server has
//! `ssl = on`, with a certificate no public CA signed).

use tollgate_control::Database;
use tollgate_testkit::PostgresDatabase;

#[tokio::test]
async fn sslmode_in_the_url_encrypts_and_verifies_the_connection() {
    let pg = PostgresDatabase::create();
    let plain = Database::connect(pg.url()).await.expect("connect");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(plain.pool())
        .await
        .expect("show ssl");
    assert_eq!(
        ssl, "on",
        "this test needs TLS on the test PostgreSQL server: set `ssl = on` with a certificate \
         in postgresql.conf (Debian's default), or point TOLLGATE_TEST_POSTGRES at one that has it"
    );
    plain.close().await;

    let required = Database::connect(&format!("{}?sslmode=require", pg.url()))
        .await
        .expect("connect with sslmode=require");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(required.pool())
            .await
            .expect("pg_stat_ssl");
    assert!(
        encrypted,
        "sslmode=require must give an encrypted connection"
    );
    required.close().await;

    // verify-full checks the certificate against trusted roots: a self-signed one fails.
    let err = Database::connect(&format!("{}?sslmode=verify-full", pg.url()))
        .await
        .expect_err("an unverifiable certificate is refused");
    let text = err.to_string();
    assert!(
        text.contains("certificate") || text.contains("Certificate"),
        "{text}"
    );
}
