//! Options given by name in some language (a Python `**kwargs` dict, a JS options object): the
//! contract between the builder option readers generated into [`super::builder`] — written once,
//! for every language — and each binding's value conversions. A binding implements [`Get`] for
//! every option type (one blanket impl over its own conversion trait) and opens a reader for a
//! [`Call`], refusing keys the call does not know.

use crate::graph::{CacheSharing, MountSpec, Network, Owner, Platform};
use crate::Digest;
use std::collections::BTreeMap;

/// One option's names: snake_case (Python, C) and camelCase (JavaScript).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The snake_case name.
    pub name: &'static str,
    /// The camelCase name.
    pub js: &'static str,
}

/// A builder call's options: the call's name as users write it in errors (`State.run`) and the
/// keys it accepts, in documentation order.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The call (`State.mkdir`, `cache_mount`).
    pub name: &'static str,
    /// The accepted keys.
    pub keys: &'static [Key],
}

impl Call {
    /// The accepted snake_case names.
    pub fn names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|k| k.name).collect()
    }

    /// The accepted camelCase names.
    pub fn js_names(&self) -> Vec<&'static str> {
        self.keys.iter().map(|k| k.js).collect()
    }
}

/// The error type of a binding's reader (e.g. `PyErr`, `napi::Error`).
pub trait Reader {
    /// The binding's error.
    type Error;
}

/// Reads one option of type `T`: `None` when not given, an error naming the key when the value
/// has another type.
pub trait Get<T>: Reader {
    /// The value of `key`.
    fn get(&self, key: &Key) -> Result<Option<T>, Self::Error>;
}

/// A reader of every option type the builder surface uses.
pub trait Source:
    Reader
    + Get<bool>
    + Get<u32>
    + Get<u64>
    + Get<i64>
    + Get<String>
    + Get<Vec<String>>
    + Get<Vec<(String, String)>>
    + Get<BTreeMap<String, String>>
    + Get<Owner>
    + Get<Vec<MountSpec>>
    + Get<Network>
    + Get<CacheSharing>
    + Get<Digest>
    + Get<Platform>
{
}

impl<R> Source for R where
    R: Reader
        + Get<bool>
        + Get<u32>
        + Get<u64>
        + Get<i64>
        + Get<String>
        + Get<Vec<String>>
        + Get<Vec<(String, String)>>
        + Get<BTreeMap<String, String>>
        + Get<Owner>
        + Get<Vec<MountSpec>>
        + Get<Network>
        + Get<CacheSharing>
        + Get<Digest>
        + Get<Platform>
{
}
