//! Text search: tokenizing, stemming and scoring as MongoDB's text indexes (version 3) do, and
//! the `$text` query.
//!
//! # Terms
//!
//! A string is split into words (Unicode word boundaries, then at every character that is not a
//! letter or digit, so `don't` gives `don` and `t`, as MongoDB's delimiter table does); each word
//! is case-folded and stripped of diacritics (NFD, combining marks removed) unless the query is
//! `$caseSensitive`/`$diacriticSensitive`; stop words of the language are dropped (MongoDB's
//! lists, in `stopwords/`); the rest is stemmed with the language's Snowball stemmer
//! (`rust-stemmers`). The language of a document is its `language_override` field (default
//! `language`) or the index's `default_language`; the language of a query is its `$language` or
//! the index's default. English, French and Spanish are supported, and `none` (no stop words,
//! no stemming).
//!
//! # Scores
//!
//! MongoDB's formula (`FTSSpec::scoreStringV2`): in one string of a field with weight `w`, a term
//! occurring `n` times out of `N` terms scores `w * freq * (0.5 * n / N + 0.5)`, where `freq` sums
//! `1, 1/2, 1/4, …` over the occurrences, times 1.1 when the term is the whole string. A
//! document's score for a query is the sum, over the query's distinct positive terms, of the
//! document's scores for them.
//!
//! # Queries
//!
//! `$search` is a list of terms, `"phrases"` and `-negations`: a document matches when it has
//! some positive term (a phrase's words count as terms), every phrase as a substring of some
//! indexed string, and no negated term or phrase.

use std::collections::HashMap;
use std::sync::Arc;

use bson::{Bson, Document};
use rust_stemmers::{Algorithm, Stemmer};
use unicode_normalization::UnicodeNormalization;
use unicode_segmentation::UnicodeSegmentation;

use crate::error::Result;
use crate::{bail, err};

/// The field a document's score is carried in between a `$text` query and the projection, sort
/// or pipeline that reads it with `{$meta: "textScore"}`; it never reaches a client. Defined
/// with the expressions, which read it for `$meta`.
pub use crate::expr::TEXT_SCORE_FIELD as SCORE_FIELD;

/// A supported text search language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// `english` / `en`.
    English,
    /// `french` / `fr`.
    French,
    /// `spanish` / `es`.
    Spanish,
    /// `none`: no stop words and no stemming.
    None,
}

impl Language {
    /// Looks a language name (or ISO 639-1 code) up; `None` when unsupported.
    pub fn parse(name: &str) -> Option<Language> {
        Some(match name.to_ascii_lowercase().as_str() {
            "english" | "en" => Language::English,
            "french" | "fr" => Language::French,
            "spanish" | "es" => Language::Spanish,
            "none" => Language::None,
            _ => return None,
        })
    }

    /// MongoDB's error for a language it or Folio does not support.
    pub fn unsupported(name: &str) -> crate::error::Error {
        crate::error::Error::new(
            crate::error::Code::Other(17262),
            format!("unsupported language: \"{name}\" for text index version 3"),
        )
    }

    fn stop_words(self) -> &'static [&'static str] {
        use std::sync::OnceLock;
        static EN: OnceLock<Vec<&'static str>> = OnceLock::new();
        static FR: OnceLock<Vec<&'static str>> = OnceLock::new();
        static ES: OnceLock<Vec<&'static str>> = OnceLock::new();
        let (cell, text) = match self {
            Language::English => (&EN, include_str!("stopwords/english.txt")),
            Language::French => (&FR, include_str!("stopwords/french.txt")),
            Language::Spanish => (&ES, include_str!("stopwords/spanish.txt")),
            Language::None => return &[],
        };
        cell.get_or_init(|| text.lines().filter(|l| !l.is_empty()).collect())
    }

    fn is_stop_word(self, folded: &str) -> bool {
        self.stop_words().iter().any(|w| fold(w, false, false) == folded)
    }

    fn stemmer(self) -> Option<Stemmer> {
        Some(Stemmer::create(match self {
            Language::English => Algorithm::English,
            Language::French => Algorithm::French,
            Language::Spanish => Algorithm::Spanish,
            Language::None => return None,
        }))
    }
}

/// Case-folds and strips diacritics, unless asked not to.
pub fn fold(s: &str, case_sensitive: bool, diacritic_sensitive: bool) -> String {
    let s = if case_sensitive { s.to_string() } else { s.to_lowercase() };
    if diacritic_sensitive {
        return s;
    }
    s.nfd().filter(|c| !unicode_normalization::char::is_combining_mark(*c)).nfc().collect()
}

/// The words of a string (see the module documentation).
fn words(s: &str) -> Vec<&str> {
    s.unicode_words()
        .flat_map(|w| w.split(|c: char| !c.is_alphanumeric()))
        .filter(|w| !w.is_empty())
        .collect()
}

/// The terms of a string: folded, stop words dropped, stemmed.
pub fn terms(
    s: &str,
    lang: Language,
    case_sensitive: bool,
    diacritic_sensitive: bool,
) -> Vec<String> {
    let stemmer = lang.stemmer();
    words(s)
        .into_iter()
        .filter_map(|w| {
            let folded = fold(w, case_sensitive, diacritic_sensitive);
            let plain = fold(w, false, false);
            if lang.is_stop_word(&plain) {
                return None;
            }
            Some(match &stemmer {
                Some(st) => st.stem(&folded).into_owned(),
                None => folded,
            })
        })
        .collect()
}

/// A text index's configuration.
#[derive(Clone, Debug)]
pub struct TextSpec {
    /// The weighted fields (`$**` for every string field), in name order.
    pub weights: Vec<(String, f64)>,
    /// `default_language`.
    pub default_language: Language,
    /// `language_override`.
    pub language_override: String,
}

impl TextSpec {
    /// Reads the configuration of a normalized text index specification.
    pub fn from_index(spec: &Document) -> Result<TextSpec> {
        let mut weights = Vec::new();
        if let Ok(w) = spec.get_document("weights") {
            for (k, v) in w {
                weights.push((k.clone(), number(v).unwrap_or(1.0)));
            }
        }
        let default_language = spec.get_str("default_language").unwrap_or("english");
        let default_language = Language::parse(default_language)
            .ok_or_else(|| Language::unsupported(default_language))?;
        let language_override = spec.get_str("language_override").unwrap_or("language").to_string();
        Ok(TextSpec { weights, default_language, language_override })
    }

    /// The language a document is indexed in.
    pub fn doc_language(&self, doc: &Document) -> Result<Language> {
        match doc.get(&self.language_override) {
            Some(Bson::String(l)) => Language::parse(l).ok_or_else(|| {
                crate::error::Error::new(
                    crate::error::Code::Other(17262),
                    format!("language override unsupported: {l}"),
                )
            }),
            _ => Ok(self.default_language),
        }
    }

    /// The indexed strings of a document with their weights.
    pub fn strings(&self, doc: &Document) -> Vec<(f64, String)> {
        let mut out = Vec::new();
        for (path, w) in &self.weights {
            if path == "$**" {
                collect_all(&Bson::Document(doc.clone()), *w, &mut out, &self.language_override);
            } else {
                for v in crate::doc::path::collect_values(doc, path) {
                    match v {
                        Bson::String(s) => out.push((*w, s.clone())),
                        Bson::Array(items) => out.extend(
                            items.iter().filter_map(|i| i.as_str().map(|s| (*w, s.to_string()))),
                        ),
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// The document's score for each of its terms (MongoDB's formula, see the module docs).
    pub fn scores(&self, doc: &Document) -> Result<HashMap<String, f64>> {
        let lang = self.doc_language(doc)?;
        let mut out: HashMap<String, f64> = HashMap::new();
        for (weight, raw) in self.strings(doc) {
            let ts = terms(&raw, lang, false, false);
            let total = ts.len() as f64;
            let mut per: HashMap<&str, (f64, f64, f64)> = HashMap::new(); // (exp, count, freq)
            for t in &ts {
                let e = per.entry(t.as_str()).or_insert((0.0, 0.0, 0.0));
                e.0 = if e.0 == 0.0 { 1.0 } else { e.0 * 2.0 };
                e.1 += 1.0;
                e.2 += 1.0 / e.0;
            }
            for (t, (_, count, freq)) in per {
                let coeff = 0.5 * count / total + 0.5;
                let adjustment =
                    if raw.len() == t.len() && raw.eq_ignore_ascii_case(t) { 1.1 } else { 1.0 };
                *out.entry(t.to_string()).or_insert(0.0) += weight * freq * coeff * adjustment;
            }
        }
        Ok(out)
    }
}

fn collect_all(v: &Bson, w: f64, out: &mut Vec<(f64, String)>, skip: &str) {
    match v {
        Bson::String(s) => out.push((w, s.clone())),
        Bson::Array(items) => items.iter().for_each(|i| collect_all(i, w, out, skip)),
        Bson::Document(d) => {
            for (k, x) in d {
                if k != skip && k != SCORE_FIELD {
                    collect_all(x, w, out, skip);
                }
            }
        }
        _ => {}
    }
}

/// An int, long or double as a double (a text index's weights; decimals are not weights).
fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) => crate::doc::compare::as_f64(v),
        _ => None,
    }
}

/// A parsed `$text` query, bound to its index's configuration by the planner.
#[derive(Clone, Debug)]
pub struct TextQuery {
    /// The operator document as written.
    pub source: Document,
    /// `$language`, if given.
    pub language: Option<Language>,
    /// `$caseSensitive`.
    pub case_sensitive: bool,
    /// `$diacriticSensitive`.
    pub diacritic_sensitive: bool,
    /// Positive words (phrase words included), negated words, phrases, negated phrases.
    pub words: Vec<String>,
    neg_words: Vec<String>,
    phrases: Vec<String>,
    neg_phrases: Vec<String>,
    /// The text index's configuration, once bound.
    pub spec: Option<Arc<TextSpec>>,
}

impl TextQuery {
    /// Parses `{$search, $language, $caseSensitive, $diacriticSensitive}`.
    pub fn parse(v: &Bson) -> Result<TextQuery> {
        let Bson::Document(d) = v else { bail!(BadValue, "$text expects an object") };
        let mut search = None;
        let mut q = TextQuery {
            source: d.clone(),
            language: None,
            case_sensitive: false,
            diacritic_sensitive: false,
            words: Vec::new(),
            neg_words: Vec::new(),
            phrases: Vec::new(),
            neg_phrases: Vec::new(),
            spec: None,
        };
        for (k, x) in d {
            match (k.as_str(), x) {
                ("$search", Bson::String(s)) => search = Some(s.clone()),
                ("$search", _) => bail!(TypeMismatch, "$search requires a string value"),
                ("$language", Bson::String(l)) => {
                    q.language = Some(Language::parse(l).ok_or_else(|| {
                        err!(BadValue, "unsupported language: \"{}\" for text index version 3", l)
                    })?)
                }
                ("$language", _) => bail!(TypeMismatch, "$language requires a string value"),
                ("$caseSensitive", Bson::Boolean(b)) => q.case_sensitive = *b,
                ("$caseSensitive", _) => {
                    bail!(TypeMismatch, "$caseSensitive requires a boolean value")
                }
                ("$diacriticSensitive", Bson::Boolean(b)) => q.diacritic_sensitive = *b,
                ("$diacriticSensitive", _) => {
                    bail!(TypeMismatch, "$diacriticSensitive requires a boolean value")
                }
                (other, _) => bail!(BadValue, "Unexpected field {other} in $text"),
            }
        }
        let Some(search) = search else { bail!(FailedToParse, "$text requires a $search field") };
        // Quoted phrases (a leading `-` negates), then the words outside quotes.
        let mut rest = String::new();
        let mut in_phrase: Option<(usize, bool)> = None;
        let bytes = search.as_str();
        for (i, c) in search.char_indices() {
            match (c, in_phrase) {
                ('"', None) => {
                    let negated = rest.ends_with('-');
                    if negated {
                        rest.pop();
                    }
                    in_phrase = Some((i + 1, negated));
                    rest.push(' ');
                }
                ('"', Some((start, negated))) => {
                    let phrase = bytes[start..i].to_string();
                    if negated {
                        q.neg_phrases.push(phrase);
                    } else {
                        q.words.extend(words(&phrase).into_iter().map(str::to_string));
                        q.phrases.push(phrase);
                    }
                    in_phrase = None;
                }
                (_, Some(_)) => {}
                (c, None) => rest.push(c),
            }
        }
        if let Some((start, negated)) = in_phrase {
            // An unclosed quote runs to the end, as in MongoDB.
            let phrase = bytes[start..].to_string();
            if negated {
                q.neg_phrases.push(phrase);
            } else {
                q.words.extend(words(&phrase).into_iter().map(str::to_string));
                q.phrases.push(phrase);
            }
        }
        for token in rest.split_whitespace() {
            match token.strip_prefix('-') {
                Some(neg) => q.neg_words.extend(words(neg).into_iter().map(str::to_string)),
                None => q.words.extend(words(token).into_iter().map(str::to_string)),
            }
        }
        Ok(q)
    }

    /// The query bound to a text index's configuration.
    pub fn bound(&self, spec: Arc<TextSpec>) -> TextQuery {
        TextQuery { spec: Some(spec), ..self.clone() }
    }

    fn lang(&self) -> Language {
        self.language
            .or(self.spec.as_ref().map(|s| s.default_language))
            .unwrap_or(Language::English)
    }

    fn stem_all(&self, ws: &[String]) -> Vec<String> {
        let mut out: Vec<String> = ws
            .iter()
            .flat_map(|w| terms(w, self.lang(), self.case_sensitive, self.diacritic_sensitive))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The distinct positive terms, folded and stemmed in the query's language (the index keys
    /// a query scans).
    pub fn positive_terms(&self) -> Vec<String> {
        let mut t = self.stem_all(&self.words);
        if self.case_sensitive || self.diacritic_sensitive {
            // The index holds folded terms; the sensitive check is the matcher's.
            t = self.words.iter().flat_map(|w| terms(w, self.lang(), false, false)).collect();
            t.sort();
            t.dedup();
        }
        t
    }

    /// Whether a document matches (the query must be bound; unbound it matches everything,
    /// having been applied by the scan that produced the document).
    pub fn matches(&self, doc: &Document) -> bool {
        let Some(spec) = &self.spec else { return true };
        let Ok(lang) = spec.doc_language(doc) else { return false };
        let strings = spec.strings(doc);
        let (cs, ds) = (self.case_sensitive, self.diacritic_sensitive);
        let mut doc_terms: Vec<String> =
            strings.iter().flat_map(|(_, s)| terms(s, lang, cs, ds)).collect();
        doc_terms.sort();
        doc_terms.dedup();
        let has = |t: &String| doc_terms.binary_search(t).is_ok();
        let query_terms = |ws: &[String]| -> Vec<String> {
            let mut out: Vec<String> =
                ws.iter().flat_map(|w| terms(w, self.lang(), cs, ds)).collect();
            out.sort();
            out.dedup();
            out
        };
        let positive = query_terms(&self.words);
        if positive.is_empty() || !positive.iter().any(has) {
            return false;
        }
        if query_terms(&self.neg_words).iter().any(has) {
            return false;
        }
        let folded: Vec<String> = strings.iter().map(|(_, s)| fold(s, cs, ds)).collect();
        let contains = |p: &String| {
            let p = fold(p, cs, ds);
            folded.iter().any(|s| s.contains(&p))
        };
        self.phrases.iter().all(contains) && !self.neg_phrases.iter().any(contains)
    }

    /// The document's score for this query (0 when unbound).
    pub fn score(&self, doc: &Document) -> f64 {
        let Some(spec) = &self.spec else { return 0.0 };
        let Ok(scores) = spec.scores(doc) else { return 0.0 };
        self.positive_terms().iter().filter_map(|t| scores.get(t)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn terms_fold_drop_stop_words_and_stem() {
        assert_eq!(terms("The Running dogs", Language::English, false, false), ["run", "dog"]);
        assert_eq!(terms("Café crème", Language::French, false, false), ["caf", "crem"]);
        assert_eq!(terms("los niños corriendo", Language::Spanish, false, false), ["nin", "corr"]);
        assert_eq!(terms("don't", Language::None, false, false), ["don", "t"]);
    }

    #[test]
    fn search_strings_parse_into_terms_phrases_and_negations() {
        let q = TextQuery::parse(&Bson::Document(
            doc! {"$search": "coffee -shop \"cafe con leche\" -\"iced tea\""},
        ))
        .unwrap();
        assert_eq!(q.words, ["cafe", "con", "leche", "coffee"]);
        assert_eq!(q.neg_words, ["shop"]);
        assert_eq!(q.phrases, ["cafe con leche"]);
        assert_eq!(q.neg_phrases, ["iced tea"]);
    }

    #[test]
    fn scores_follow_mongodb_formula() {
        let spec = TextSpec {
            weights: vec![("t".into(), 1.0)],
            default_language: Language::English,
            language_override: "language".into(),
        };
        // One term in a one-term string: 1 * 1 * (0.5 * 1/1 + 0.5); the stem "coffe" is not
        // the whole string "coffee", so there is no 1.1 boost.
        let s = spec.scores(&doc! {"t": "coffee"}).unwrap();
        assert!((s["coffe"] - 1.0).abs() < 1e-9, "{s:?}");
        // Two occurrences among three terms: freq 1.5, coeff 0.5 * 2/3 + 0.5.
        let s = spec.scores(&doc! {"t": "coffee shop coffee"}).unwrap();
        assert!((s["coffe"] - 1.5 * (0.5 * 2.0 / 3.0 + 0.5)).abs() < 1e-9, "{s:?}");
    }
}
