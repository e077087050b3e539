//! Cursors over query results, fetched batch by batch with `getMore` as a driver does.
//!
//! A [`Cursor`] runs outside any session. A [`SessionCursor`] was opened in a session (maybe in a
//! transaction), and its `getMore`s must run in the same session, so each step takes the session:
//! `cursor.next(&mut session)` or `for d in cursor.iter(&mut session)`.

use std::collections::VecDeque;
use std::marker::PhantomData;

use bson::{Bson, Document, doc};
use serde::de::DeserializeOwned;

use super::client::Client;
use super::error::{Error, Result, reply_i64};
use super::session::ClientSession;

/// The state shared by both cursor kinds.
struct CursorState {
    client: Client,
    db: String,
    coll: String,
    id: i64,
    buffer: VecDeque<Document>,
    batch_size: Option<u32>,
}

impl CursorState {
    /// Parses the `cursor` field of a `find`/`aggregate`/`listIndexes` reply.
    fn from_reply(client: Client, mut reply: Document, batch_size: Option<u32>) -> Result<Self> {
        let cursor =
            reply.get_document_mut("cursor").map_err(|e| Error::invalid_response(e.to_string()))?;
        let buffer = batch(cursor, "firstBatch")?;
        let ns = cursor.get_str("ns").unwrap_or_default();
        let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
        Ok(CursorState {
            client,
            db: db.to_string(),
            coll: coll.to_string(),
            id: reply_i64(cursor, "id").unwrap_or(0),
            buffer,
            batch_size,
        })
    }

    /// The next raw document, fetching a batch when the buffer is empty.
    fn next_raw(&mut self, session: Option<&mut ClientSession>) -> Option<Result<Document>> {
        let mut session = session;
        while self.buffer.is_empty() {
            if self.id == 0 {
                return None;
            }
            if let Err(e) = self.get_more(session.as_deref_mut()) {
                // A failed getMore leaves nothing to kill on the server.
                self.id = 0;
                return Some(Err(e));
            }
        }
        self.buffer.pop_front().map(Ok)
    }

    fn get_more(&mut self, session: Option<&mut ClientSession>) -> Result<()> {
        let mut cmd = doc! { "getMore": self.id, "collection": self.coll.clone() };
        if let Some(n) = self.batch_size {
            cmd.insert("batchSize", i64::from(n));
        }
        let mut reply = self.client.execute(&self.db, cmd, session)?;
        let cursor =
            reply.get_document_mut("cursor").map_err(|e| Error::invalid_response(e.to_string()))?;
        self.id = reply_i64(cursor, "id").unwrap_or(0);
        self.buffer = batch(cursor, "nextBatch")?;
        Ok(())
    }
}

impl Drop for CursorState {
    fn drop(&mut self) {
        if self.id != 0 {
            // Best effort, like a driver: the server reaps idle cursors anyway.
            let _ = self
                .client
                .send(&self.db, doc! { "killCursors": self.coll.clone(), "cursors": [self.id] });
        }
    }
}

/// Takes a reply's batch out of its cursor document (the reply is not needed after).
fn batch(cursor: &mut Document, key: &str) -> Result<VecDeque<Document>> {
    let docs = match cursor.get_mut(key) {
        Some(Bson::Array(docs)) => std::mem::take(docs),
        Some(_) => return Err(Error::invalid_response(format!("cursor.{key} is not an array"))),
        None => return Err(Error::invalid_response(format!("cursor.{key} is missing"))),
    };
    docs.into_iter()
        .map(|d| match d {
            Bson::Document(d) => Ok(d),
            other => {
                Err(Error::invalid_response(format!("cursor batch holds a non-document: {other}")))
            }
        })
        .collect()
}

fn decode<T: DeserializeOwned>(d: Result<Document>) -> Result<T> {
    d.and_then(|d| bson::deserialize_from_document(d).map_err(Error::deserialization))
}

/// A cursor outside any session. Iterate it: `for doc in cursor { let doc = doc?; }`.
pub struct Cursor<T> {
    state: CursorState,
    _type: PhantomData<fn() -> T>,
}

impl<T> Cursor<T> {
    pub(crate) fn new(client: Client, reply: Document, batch_size: Option<u32>) -> Result<Self> {
        Ok(Cursor {
            state: CursorState::from_reply(client, reply, batch_size)?,
            _type: PhantomData,
        })
    }

    /// The server's cursor id (0 once exhausted).
    pub fn id(&self) -> i64 {
        self.state.id
    }

    /// Turns the cursor into one whose documents are (de)serialized as `U`.
    pub fn with_type<U>(self) -> Cursor<U> {
        Cursor { state: self.state, _type: PhantomData }
    }
}

impl<T: DeserializeOwned> Iterator for Cursor<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        self.state.next_raw(None).map(decode)
    }
}

/// A cursor opened in a session; every step takes the session.
pub struct SessionCursor<T> {
    state: CursorState,
    _type: PhantomData<fn() -> T>,
}

impl<T> SessionCursor<T> {
    pub(crate) fn new(client: Client, reply: Document, batch_size: Option<u32>) -> Result<Self> {
        Ok(SessionCursor {
            state: CursorState::from_reply(client, reply, batch_size)?,
            _type: PhantomData,
        })
    }

    /// The server's cursor id (0 once exhausted).
    pub fn id(&self) -> i64 {
        self.state.id
    }

    /// Turns the cursor into one whose documents are (de)serialized as `U`.
    pub fn with_type<U>(self) -> SessionCursor<U> {
        SessionCursor { state: self.state, _type: PhantomData }
    }
}

impl<T: DeserializeOwned> SessionCursor<T> {
    /// The next document, fetching more in `session` when needed.
    pub fn next(&mut self, session: &mut ClientSession) -> Option<Result<T>> {
        self.state.next_raw(Some(session)).map(decode)
    }

    /// An iterator that uses `session` for its `getMore`s.
    pub fn iter<'s>(&'s mut self, session: &'s mut ClientSession) -> SessionCursorIter<'s, T> {
        SessionCursorIter { cursor: self, session }
    }
}

/// Iterates a [`SessionCursor`] with its session.
pub struct SessionCursorIter<'s, T> {
    cursor: &'s mut SessionCursor<T>,
    session: &'s mut ClientSession,
}

impl<T: DeserializeOwned> Iterator for SessionCursorIter<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next(self.session)
    }
}
