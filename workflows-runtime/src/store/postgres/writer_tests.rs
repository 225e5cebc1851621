//! The writer's two paths on a real server (`WORKFLOWS_TEST_POSTGRES`): a pipelined batch in
//! which the server rejects one statement is written again write by write, each in a
//! savepoint, and the rejected write fails alone.

use crate::store::conformance::fixture::{create, new_execution, started, write};
use crate::store::conformance::postgres_server;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

#[tokio::test]
async fn a_write_the_server_rejects_in_a_pipelined_batch_fails_alone() {
    let Some((store, schema)) = postgres_server::fresh_store().await else { return };
    let now = Timestamp::now();
    for id in ["fine-1", "broken", "fine-2"] {
        create(&store, new_execution(id, "engine", now)).await;
    }
    // The server refuses every journal row of `broken`, as a constraint would.
    let (client, connection) =
        tokio_postgres::connect(&postgres_server::url().unwrap(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let refuse = format!(
        "SET search_path TO {};
         CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.execution_id = 'broken' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION refuse();",
        schema.name()
    );
    client.batch_execute(&refuse).await.unwrap();

    // Submitted together, without waiting in between: one batch, one pipelined statement.
    let first = store.append(write("fine-1", 1, [started(0)], None));
    let broken = store.append(write("broken", 1, [started(0)], None));
    let second = store.append(write("fine-2", 1, [started(0)], None));
    let (first, broken, second) = (first.await, broken.await, second.await);
    assert!(first.is_ok() && second.is_ok(), "{first:?} {second:?}");
    let error = broken.expect_err("refused");
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    assert!(error.to_string().contains("refused by the test"), "{error}");
    for (id, entries) in [("fine-1", 1), ("broken", 0), ("fine-2", 1)] {
        assert_eq!(store.journal(&id.into()).await.unwrap().len(), entries, "{id}");
    }
    // The executions behind the failure are refused at that epoch; the others go on.
    store.append(write("fine-1", 1, [started(1)], None)).await.unwrap();
    let later = store.append(write("broken", 1, [started(0)], None)).await.expect_err("behind a failed write");
    assert!(later.to_string().contains("earlier write"), "{later}");
}
