//! Collations: locale-aware string comparison, as MongoDB's `collation` option asks for it.
//!
//! # Design: collation keys
//!
//! MongoDB compares strings under a collation through ICU, and stores *collation keys* (ICU sort
//! keys) in the entries of an index that has a collation. Folio does the same, with ICU4X
//! (`icu_collator` and its compiled data) instead of hand-written tables, and goes one step
//! further: every comparison under a collation is a comparison of keys.
//!
//! [`Collation::key`] turns a string into its sort key, and encodes the key's bytes as a string
//! whose UTF-8 bytes sort exactly as the key's bytes do (byte `b` becomes the character
//! `U+0100 + b`, two UTF-8 bytes each, and UTF-8 preserves code point order). So a keyed string
//! is still a BSON string, and the ordinary comparison ([`crate::doc::compare::cmp_bson`]),
//! which compares strings by their bytes, orders keyed strings as the collation orders the
//! originals. [`Collation::transform`] maps a whole value that way: strings (and symbols) at
//! any depth of documents and arrays; field names, regexes and other types are untouched, as
//! in MongoDB, where a collation affects string *values* only.
//!
//! This keeps one comparison function for the whole engine. The matcher compares keyed document
//! values to keyed operands ([`crate::query::Pred::Collated`]), sorts and `distinct` compare keyed
//! values, and an index with a collation stores keyed values, so an index scan over keyed
//! bounds is exact. The price is a key computation per string compared, which is what ICU costs
//! anyway.
//!
//! # The collation document
//!
//! [`Collation::parse`] validates the document as MongoDB does (unknown field, wrong types,
//! strength out of range, unsupported locale) and [`Collation::to_document`] returns the fully
//! resolved form MongoDB shows in `listIndexes` and `listCollections`. `{locale: "simple"}` is
//! binary comparison: it parses to `None`, and everything then compares bytes.
//!
//! ICU4X cannot turn on `backwards` (French secondary ordering) by option; it is accepted and
//! shown, and applies where the locale itself asks for it (`fr_CA`). `normalization` is accepted
//! too: ICU4X always compares canonically equivalent strings as equal, which is what
//! `normalization: true` asks for.

use std::fmt;
use std::sync::Arc;

use bson::{Bson, Document};
use icu_collator::options::{AlternateHandling, CaseLevel, CollatorOptions, MaxVariable, Strength};
use icu_collator::preferences::{CollationCaseFirst, CollationNumericOrdering};
use icu_collator::{Collator, CollatorBorrowed, CollatorPreferences};

use crate::doc::fmt::doc_string as format_document;
use crate::error::{Code, Error, Result};
use crate::{bail, err};

/// The ICU version MongoDB reports in a resolved collation.
const ICU_VERSION: &str = "57.1";

/// The locales MongoDB accepts (its "supported languages and locales" list), with the
/// `@collation=` variants it documents.
const LOCALES: &[&str] = &[
    "af",
    "sq",
    "am",
    "ar",
    "hy",
    "as",
    "az",
    "bn",
    "be",
    "bs",
    "bs_Cyrl",
    "bg",
    "my",
    "ca",
    "chr",
    "zh",
    "zh_Hant",
    "hr",
    "cs",
    "da",
    "nl",
    "dz",
    "en",
    "en_US",
    "en_US_POSIX",
    "eo",
    "et",
    "ee",
    "fo",
    "fil",
    "fi",
    "fi_FI",
    "fr",
    "fr_CA",
    "gl",
    "ka",
    "de",
    "de_AT",
    "el",
    "gu",
    "ha",
    "haw",
    "he",
    "hi",
    "hu",
    "is",
    "ig",
    "smn",
    "id",
    "ga",
    "it",
    "ja",
    "kl",
    "kn",
    "kk",
    "km",
    "kok",
    "ko",
    "ky",
    "lk",
    "lo",
    "lv",
    "li",
    "lt",
    "dsb",
    "lb",
    "mk",
    "ms",
    "ml",
    "mt",
    "mr",
    "mn",
    "ne",
    "se",
    "nb",
    "nn",
    "or",
    "om",
    "ps",
    "fa",
    "fa_AF",
    "pl",
    "pt",
    "pa",
    "ro",
    "ru",
    "sr",
    "sr_Latn",
    "si",
    "sk",
    "sl",
    "es",
    "sw",
    "sv",
    "ta",
    "te",
    "th",
    "bo",
    "to",
    "tr",
    "uk",
    "hsb",
    "ur",
    "ug",
    "vi",
    "wae",
    "cy",
    "yi",
    "yo",
    "zu",
];

/// `@collation=` variants MongoDB accepts, with the BCP 47 collation type they select.
const VARIANTS: &[(&str, &str)] = &[
    ("de@collation=phonebook", "phonebk"),
    ("de_AT@collation=phonebook", "phonebk"),
    ("es@collation=search", "search"),
    ("fi_FI@collation=search", "search"),
    ("ko@collation=search", "search"),
    ("si@collation=dictionary", "dict"),
    ("zh@collation=big5han", "big5han"),
    ("zh@collation=gb2312han", "gb2312"),
    ("zh@collation=unihan", "unihan"),
    ("zh@collation=zhuyin", "zhuyin"),
];

/// `caseFirst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseFirst {
    /// The locale's default (`"off"`).
    Off,
    /// Uppercase sorts first.
    Upper,
    /// Lowercase sorts first.
    Lower,
}

/// The resolved options of a collation (everything but the compiled collator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollationSpec {
    /// The locale as given (`"en_US"`, `"de@collation=phonebook"`).
    pub locale: String,
    /// `caseLevel`.
    pub case_level: bool,
    /// `caseFirst`.
    pub case_first: CaseFirst,
    /// `strength`, 1 to 5.
    pub strength: u8,
    /// `numericOrdering`: digit sequences compare by numeric value.
    pub numeric_ordering: bool,
    /// `alternate: "shifted"`: whitespace and punctuation are ignorable below level 4.
    pub shifted: bool,
    /// `maxVariable: "space"` (only spaces are ignorable) rather than `"punct"`.
    pub max_variable_space: bool,
    /// `normalization`.
    pub normalization: bool,
    /// `backwards`.
    pub backwards: bool,
}

/// A parsed, non-simple collation with its compiled ICU collator.
pub struct Collation {
    spec: CollationSpec,
    collator: CollatorBorrowed<'static>,
}

impl fmt::Debug for Collation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Collation").field(&self.spec).finish()
    }
}

impl PartialEq for Collation {
    fn eq(&self, other: &Collation) -> bool {
        self.spec == other.spec
    }
}

/// A shared collation; `None` where one is optional means the simple (binary) collation.
pub type CollationRef = Arc<Collation>;

/// The collation an operation asked for: none (the collection's default applies), the simple
/// one explicitly, or a locale's.
#[derive(Clone, Debug, Default)]
pub enum Requested {
    /// No `collation` option: the collection's default collation, if it has one.
    #[default]
    CollectionDefault,
    /// `{locale: "simple"}`: binary comparison even on a collection with a default collation.
    Simple,
    /// A locale's collation.
    Given(CollationRef),
}

impl Requested {
    /// Reads the optional `collation` field of a command or statement.
    pub fn from_field(doc: &Document, key: &str, command: &str) -> Result<Requested> {
        // An empty collation document is no collation at all, as MongoDB's commands treat it
        // (drivers and ODMs send `collation: {}` for "not set").
        match doc.get(key) {
            None => return Ok(Requested::CollectionDefault),
            Some(Bson::Document(d)) if d.is_empty() => return Ok(Requested::CollectionDefault),
            _ => {}
        }
        Ok(match Collation::from_field(doc, key, command)? {
            Some(c) => Requested::Given(c),
            None => Requested::Simple,
        })
    }

    /// Whether the operation named a collation.
    pub fn is_given(&self) -> bool {
        !matches!(self, Requested::CollectionDefault)
    }

    /// The collation in force for a collection with these options (`None`: simple).
    pub fn resolve(&self, collection_options: &Document) -> Result<Option<CollationRef>> {
        match self {
            Requested::Given(c) => Ok(Some(c.clone())),
            Requested::Simple => Ok(None),
            Requested::CollectionDefault => match collection_options.get("collation") {
                Some(Bson::Document(d)) => Collation::parse(d, "create"),
                _ => Ok(None),
            },
        }
    }
}

/// Compiled collations by their document: parsing happens per operation (and per index per
/// plan), while compiling a collator is the costly part.
static CACHE: std::sync::Mutex<Vec<(Document, CollationRef)>> = std::sync::Mutex::new(Vec::new());

/// How many compiled collations the cache keeps.
const CACHE_SIZE: usize = 32;

fn cached(doc: &Document) -> Option<CollationRef> {
    let cache = CACHE.lock().ok()?;
    cache.iter().find(|(d, _)| d == doc).map(|(_, c)| c.clone())
}

fn remember(doc: &Document, c: &CollationRef) {
    if let Ok(mut cache) = CACHE.lock() {
        if cache.len() >= CACHE_SIZE {
            cache.remove(0);
        }
        cache.push((doc.clone(), c.clone()));
    }
}

/// Whether two optional collations compare strings the same way (`None` is simple).
pub fn same(a: Option<&Collation>, b: Option<&Collation>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn wrong_type(field: &str, v: &Bson, expected: &str) -> Error {
    err!(
        TypeMismatch,
        "BSON field 'collation.{}' is the wrong type '{}', expected type '{}'",
        field,
        crate::doc::type_name(v),
        expected
    )
}

fn bool_field(field: &str, v: &Bson) -> Result<bool> {
    match v {
        Bson::Boolean(b) => Ok(*b),
        other => Err(wrong_type(field, other, "bool")),
    }
}

fn string_field<'a>(field: &str, v: &'a Bson) -> Result<&'a str> {
    match v {
        Bson::String(s) => Ok(s),
        other => Err(wrong_type(field, other, "string")),
    }
}

fn strength_field(v: &Bson) -> Result<u8> {
    let n = match v {
        Bson::Int32(n) => i64::from(*n),
        Bson::Int64(n) => *n,
        Bson::Double(d) if d.fract() == 0.0 && d.is_finite() => *d as i64,
        Bson::Double(_) => {
            return Err(Error::new(
                Code::Other(51024),
                "BSON field 'strength' value must be an integer".to_string(),
            ));
        }
        other => return Err(wrong_type("strength", other, "int")),
    };
    if n < 1 {
        return Err(Error::new(
            Code::Other(51024),
            format!("BSON field 'strength' value must be >= 1, actual value '{n}'"),
        ));
    }
    if n > 5 {
        return Err(Error::new(
            Code::Other(51024),
            format!("BSON field 'strength' value must be <= 5, actual value '{n}'"),
        ));
    }
    Ok(n as u8)
}

impl Collation {
    /// Parses a `collation` option. `command` names the option's place for the missing-locale
    /// message (`"find"`, `"create"`, `"update.updates"`). Returns `None` for the simple
    /// collation (`{locale: "simple"}`).
    pub fn parse(doc: &Document, command: &str) -> Result<Option<CollationRef>> {
        if let Some(c) = cached(doc) {
            return Ok(Some(c));
        }
        let mut spec = CollationSpec {
            locale: String::new(),
            case_level: false,
            case_first: CaseFirst::Off,
            strength: 3,
            numeric_ordering: false,
            shifted: false,
            max_variable_space: false,
            normalization: false,
            backwards: false,
        };
        let mut locale = None;
        for (k, v) in doc {
            match k.as_str() {
                "locale" => locale = Some(string_field(k, v)?.to_string()),
                "caseLevel" => spec.case_level = bool_field(k, v)?,
                "caseFirst" => {
                    spec.case_first = match string_field(k, v)? {
                        "off" => CaseFirst::Off,
                        "upper" => CaseFirst::Upper,
                        "lower" => CaseFirst::Lower,
                        other => bail!(
                            BadValue,
                            "Enumeration value '{}' for field 'caseFirst' is not a valid value.",
                            other
                        ),
                    }
                }
                "strength" => spec.strength = strength_field(v)?,
                "numericOrdering" => spec.numeric_ordering = bool_field(k, v)?,
                "alternate" => {
                    spec.shifted = match string_field(k, v)? {
                        "non-ignorable" => false,
                        "shifted" => true,
                        other => bail!(
                            BadValue,
                            "Enumeration value '{}' for field 'alternate' is not a valid value.",
                            other
                        ),
                    }
                }
                "maxVariable" => {
                    spec.max_variable_space = match string_field(k, v)? {
                        "punct" => false,
                        "space" => true,
                        other => bail!(
                            BadValue,
                            "Enumeration value '{}' for field 'maxVariable' is not a valid value.",
                            other
                        ),
                    }
                }
                "normalization" => spec.normalization = bool_field(k, v)?,
                "backwards" => spec.backwards = bool_field(k, v)?,
                "version" => {
                    string_field(k, v)?;
                }
                other => {
                    return Err(Error::unknown_field(&format!("collation.{other}")));
                }
            }
        }
        let Some(locale) = locale else {
            return Err(Error::new(
                Code::Other(40414),
                format!("BSON field '{command}.collation.locale' is missing but a required field"),
            ));
        };
        if locale == "simple" {
            return Ok(None);
        }
        let collator = compile(&locale, &spec).ok_or_else(|| {
            let mut message = format!("Field 'locale' is invalid in: {}", format_document(doc));
            let lower = locale.to_lowercase();
            if lower != locale && LOCALES.contains(&lower.as_str()) {
                message.push_str(&format!(". Did you mean '{lower}'?"));
            }
            err!(BadValue, "{}", message)
        })?;
        spec.locale = locale;
        let c = Arc::new(Collation { spec, collator });
        remember(doc, &c);
        Ok(Some(c))
    }

    /// Parses an optional `collation` field of a command or statement (`None` when absent or
    /// simple).
    pub fn from_field(doc: &Document, key: &str, command: &str) -> Result<Option<CollationRef>> {
        match doc.get(key) {
            None => Ok(None),
            Some(Bson::Document(c)) => Collation::parse(c, command),
            Some(other) => bail!(
                TypeMismatch,
                "BSON field '{}.{}' is the wrong type '{}', expected type 'object'",
                command,
                key,
                crate::doc::type_name(other)
            ),
        }
    }

    /// The resolved options.
    pub fn spec(&self) -> &CollationSpec {
        &self.spec
    }

    /// The fully resolved collation document, as `listIndexes` and `listCollections` show it.
    pub fn to_document(&self) -> Document {
        let s = &self.spec;
        bson::doc! {
            "locale": s.locale.clone(),
            "caseLevel": s.case_level,
            "caseFirst": match s.case_first {
                CaseFirst::Off => "off",
                CaseFirst::Upper => "upper",
                CaseFirst::Lower => "lower",
            },
            "strength": i32::from(s.strength),
            "numericOrdering": s.numeric_ordering,
            "alternate": if s.shifted { "shifted" } else { "non-ignorable" },
            "maxVariable": if s.max_variable_space { "space" } else { "punct" },
            "normalization": s.normalization,
            "backwards": s.backwards,
            "version": ICU_VERSION,
        }
    }

    /// Compares two strings under this collation.
    pub fn compare(&self, a: &str, b: &str) -> std::cmp::Ordering {
        self.collator.compare(a, b)
    }

    /// The collation key of a string, as a string whose bytes order like the key's (see the
    /// module docs).
    pub fn key(&self, s: &str) -> String {
        let mut bytes: Vec<u8> = Vec::new();
        // Writing into a `Vec` cannot fail.
        let _ = self.collator.write_sort_key_to(s, &mut bytes);
        bytes.iter().map(|b| char::from_u32(0x100 + u32::from(*b)).unwrap_or('\u{1ff}')).collect()
    }

    /// The value with every string (at any depth) replaced by its collation key.
    pub fn transform(&self, v: &Bson) -> Bson {
        match v {
            Bson::String(s) => Bson::String(self.key(s)),
            Bson::Symbol(s) => Bson::Symbol(self.key(s)),
            Bson::Document(d) => Bson::Document(self.transform_document(d)),
            Bson::Array(items) => Bson::Array(items.iter().map(|e| self.transform(e)).collect()),
            Bson::Double(_)
            | Bson::Boolean(_)
            | Bson::Null
            | Bson::RegularExpression(_)
            | Bson::JavaScriptCode(_)
            | Bson::JavaScriptCodeWithScope(_)
            | Bson::Int32(_)
            | Bson::Int64(_)
            | Bson::Timestamp(_)
            | Bson::Binary(_)
            | Bson::ObjectId(_)
            | Bson::DateTime(_)
            | Bson::Undefined
            | Bson::MaxKey
            | Bson::MinKey
            | Bson::Decimal128(_)
            | Bson::DbPointer(_) => v.clone(),
        }
    }

    /// A document with every string value replaced by its collation key (field names kept).
    pub fn transform_document(&self, d: &Document) -> Document {
        d.iter().map(|(k, v)| (k.clone(), self.transform(v))).collect()
    }
}

/// Whether a value contains a string or symbol anywhere (the values a collation changes).
pub fn has_strings(v: &Bson) -> bool {
    match v {
        Bson::String(_) | Bson::Symbol(_) => true,
        Bson::Document(d) => d.values().any(has_strings),
        Bson::Array(items) => items.iter().any(has_strings),
        Bson::Double(_)
        | Bson::Boolean(_)
        | Bson::Null
        | Bson::RegularExpression(_)
        | Bson::JavaScriptCode(_)
        | Bson::JavaScriptCodeWithScope(_)
        | Bson::Int32(_)
        | Bson::Int64(_)
        | Bson::Timestamp(_)
        | Bson::Binary(_)
        | Bson::ObjectId(_)
        | Bson::DateTime(_)
        | Bson::Undefined
        | Bson::MaxKey
        | Bson::MinKey
        | Bson::Decimal128(_)
        | Bson::DbPointer(_) => false,
    }
}

/// Transforms a value under an optional collation (a borrow when simple).
pub fn transform_opt<'a>(c: Option<&Collation>, v: &'a Bson) -> std::borrow::Cow<'a, Bson> {
    match c {
        Some(c) if has_strings(v) => std::borrow::Cow::Owned(c.transform(v)),
        _ => std::borrow::Cow::Borrowed(v),
    }
}

/// Builds the ICU collator for a MongoDB locale and options; `None` for an unsupported locale.
fn compile(locale: &str, spec: &CollationSpec) -> Option<CollatorBorrowed<'static>> {
    let (base, collation_type) = match VARIANTS.iter().find(|(name, _)| *name == locale) {
        Some((name, co)) => (name.split('@').next().unwrap_or(name), Some(*co)),
        None if LOCALES.contains(&locale) => (locale, None),
        None => return None,
    };
    let mut tag = base.replace('_', "-");
    if tag == "en-US-POSIX" {
        tag = "en-US-u-va-posix".to_string();
    }
    if let Some(co) = collation_type {
        tag.push_str("-u-co-");
        tag.push_str(co);
    }
    let parsed = icu_locale_core::Locale::try_from_str(&tag).ok()?;
    let mut prefs = CollatorPreferences::from(&parsed);
    prefs.case_first = match spec.case_first {
        CaseFirst::Off => None,
        CaseFirst::Upper => Some(CollationCaseFirst::Upper),
        CaseFirst::Lower => Some(CollationCaseFirst::Lower),
    };
    prefs.numeric_ordering = Some(if spec.numeric_ordering {
        CollationNumericOrdering::True
    } else {
        CollationNumericOrdering::False
    });
    let mut options = CollatorOptions::default();
    options.strength = Some(match spec.strength {
        1 => Strength::Primary,
        2 => Strength::Secondary,
        3 => Strength::Tertiary,
        4 => Strength::Quaternary,
        _ => Strength::Identical,
    });
    options.case_level = Some(if spec.case_level { CaseLevel::On } else { CaseLevel::Off });
    options.alternate_handling = Some(if spec.shifted {
        AlternateHandling::Shifted
    } else {
        AlternateHandling::NonIgnorable
    });
    options.max_variable =
        Some(if spec.max_variable_space { MaxVariable::Space } else { MaxVariable::Punctuation });
    Collator::try_new(prefs, options).ok()
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use bson::doc;

    use super::*;

    fn coll(d: Document) -> CollationRef {
        Collation::parse(&d, "find").expect("valid").expect("not simple")
    }

    #[test]
    fn strengths() {
        let s1 = coll(doc! {"locale": "en", "strength": 1});
        let s2 = coll(doc! {"locale": "en", "strength": 2});
        let s3 = coll(doc! {"locale": "en"});
        assert_eq!(s1.compare("cafe", "Café"), Ordering::Equal);
        assert_eq!(s2.compare("cafe", "CAFE"), Ordering::Equal);
        assert_ne!(s2.compare("cafe", "café"), Ordering::Equal);
        assert_ne!(s3.compare("cafe", "CAFE"), Ordering::Equal);
        assert_eq!(s2.key("ping"), s2.key("PING"));
        assert!(s3.key("a") < s3.key("B"), "a sorts before B in English");
    }

    #[test]
    fn keys_order_like_compare() {
        let c = coll(doc! {"locale": "fr", "numericOrdering": true});
        let words = ["a10", "a2", "côte", "cote", "coté", "Côte", "B", "b", "", "z"];
        for x in words {
            for y in words {
                assert_eq!(c.key(x).cmp(&c.key(y)), c.compare(x, y), "{x} vs {y}");
            }
        }
        assert_eq!(c.compare("a2", "a10"), Ordering::Less);
    }

    #[test]
    fn every_listed_locale_compiles() {
        for locale in LOCALES.iter().chain(VARIANTS.iter().map(|(l, _)| l)) {
            let c = Collation::parse(&doc! {"locale": *locale}, "find");
            assert!(matches!(c, Ok(Some(_))), "{locale}: {c:?}");
        }
    }

    #[test]
    fn locale_tailorings() {
        // Traditional Spanish orders "ch" as one letter; modern Spanish does not, but "ñ"
        // follows "n" in both.
        let es = coll(doc! {"locale": "es"});
        assert_eq!(es.compare("ñ", "o"), Ordering::Less);
        assert_eq!(es.compare("n", "ñ"), Ordering::Less);
        // German phonebook order treats "ä" as "ae".
        let book = coll(doc! {"locale": "de@collation=phonebook"});
        let plain = coll(doc! {"locale": "de"});
        assert_eq!(book.compare("Müller", "Muf"), Ordering::Less);
        assert_eq!(plain.compare("Müller", "Muf"), Ordering::Greater);
        // Resolved form as listIndexes shows it.
        let d = coll(doc! {"locale": "fr", "strength": 1}).to_document();
        assert_eq!(d.get_str("locale").ok(), Some("fr"));
        assert_eq!(d.get_i32("strength").ok(), Some(1));
        assert_eq!(d.get_str("caseFirst").ok(), Some("off"));
        assert_eq!(d.get_str("version").ok(), Some("57.1"));
    }

    #[test]
    fn validation() {
        let e = |d: Document| Collation::parse(&d, "find").unwrap_err();
        assert_eq!(Collation::parse(&doc! {"locale": "simple"}, "find").unwrap(), None);
        let bad = e(doc! {"locale": "zz_nope"});
        assert_eq!(bad.code_number(), 2);
        assert_eq!(bad.message, "Field 'locale' is invalid in: { locale: \"zz_nope\" }");
        assert_eq!(e(doc! {"strength": 2}).code_number(), 40414);
        assert_eq!(e(doc! {"locale": "en", "bogus": 1}).code_number(), 40415);
        let s = e(doc! {"locale": "en", "strength": 6});
        assert_eq!(s.message, "BSON field 'strength' value must be <= 5, actual value '6'");
        assert_eq!(e(doc! {"locale": "en", "caseLevel": "x"}).code_number(), 14);
    }
}
