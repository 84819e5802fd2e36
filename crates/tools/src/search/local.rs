//! The embedded search backend: a tantivy full-text index, in memory, over a folder of
//! Markdown, text and HTML files the operator points the server at (`--search-dir`).
//!
//! A file's URL: when the first folder under the root is a domain name (it has a dot), the
//! file is `https://<that domain>/<rest of its path>`, so a mirrored site keeps its URLs and
//! `include_domains` works on them; otherwise it is its `file://` path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, Schema, Value, STORED, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{doc, Index, IndexReader, TantivyDocument};

use super::{domain_allowed, SearchBackend, SearchError, SearchQuery, SearchSettings};
use crate::fetch::{html_text, title_of};
use crate::tool::SearchHit;

/// Files larger than this are skipped [8 MiB].
const MAX_FILE_BYTES: u64 = 8 << 20;
/// Characters of a hit's passage.
const SNIPPET_CHARS: usize = 300;

#[derive(Clone, Copy)]
struct Fields {
    title: Field,
    url: Field,
    body: Field,
}

/// The index and what it was built from.
#[derive(Clone)]
pub struct LocalIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Documents indexed.
    pub documents: usize,
    pub root: PathBuf,
}

impl std::fmt::Debug for LocalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIndex")
            .field("root", &self.root)
            .field("documents", &self.documents)
            .finish()
    }
}

/// One file, read for the index.
struct Doc {
    title: String,
    url: String,
    body: String,
}

impl LocalIndex {
    /// Indexes every `.md`, `.markdown`, `.txt`, `.html` and `.htm` file under `root`.
    pub fn build(root: &Path) -> Result<LocalIndex, SearchError> {
        if !root.is_dir() {
            return Err(SearchError::Backend(format!(
                "the search folder {} does not exist",
                root.display()
            )));
        }
        let mut sb = Schema::builder();
        let fields = Fields {
            title: sb.add_text_field("title", TEXT | STORED),
            url: sb.add_text_field("url", STORED),
            body: sb.add_text_field("body", TEXT | STORED),
        };
        let index = Index::create_in_ram(sb.build());
        let err = |e: tantivy::TantivyError| SearchError::Backend(e.to_string());
        let mut writer = index.writer(50_000_000).map_err(err)?;
        let mut files = Vec::new();
        collect_files(root, &mut files);
        files.sort();
        let mut documents = 0;
        for path in &files {
            let Some(d) = read_doc(root, path) else {
                continue;
            };
            writer
                .add_document(
                    doc!(fields.title => d.title, fields.url => d.url, fields.body => d.body),
                )
                .map_err(err)?;
            documents += 1;
        }
        writer.commit().map_err(err)?;
        let reader = index.reader().map_err(err)?;
        Ok(LocalIndex {
            index,
            reader,
            fields,
            documents,
            root: root.to_path_buf(),
        })
    }

    fn search_sync(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let err = |e: tantivy::TantivyError| SearchError::Backend(e.to_string());
        let searcher = self.reader.searcher();
        let mut parser =
            QueryParser::for_index(&self.index, vec![self.fields.title, self.fields.body]);
        parser.set_field_boost(self.fields.title, 2.0);
        // Lenient: a query is the model's words, not query syntax.
        let (query, _) = parser.parse_query_lenient(&q.query);
        // More than asked for, so that hits the domain filters drop leave enough.
        let want = q.max_results.max(1);
        let candidates = searcher
            .search(&query, &TopDocs::with_limit(want * 10 + 20))
            .map_err(err)?;
        let mut snippets =
            SnippetGenerator::create(&searcher, &*query, self.fields.body).map_err(err)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::new();
        for (score, addr) in candidates {
            let d: TantivyDocument = searcher.doc(addr).map_err(err)?;
            let text = |f: Field| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let url = text(self.fields.url);
            if !domain_allowed(&url, &q.settings) {
                continue;
            }
            let fragment = snippets.snippet_from_doc(&d).fragment().trim().to_string();
            let content = if fragment.is_empty() {
                text(self.fields.body).chars().take(SNIPPET_CHARS).collect()
            } else {
                fragment
            };
            hits.push(SearchHit {
                title: text(self.fields.title),
                url,
                content,
                score: (f64::from(score) * 1e4).round() / 1e4,
            });
            if hits.len() == want {
                break;
            }
        }
        Ok(hits)
    }
}

#[async_trait]
impl SearchBackend for LocalIndex {
    fn name(&self) -> &'static str {
        "local index"
    }

    fn check(&self, s: &SearchSettings) -> Result<(), SearchError> {
        if s.country.is_some() {
            return Err(SearchError::Unsupported(
                "country",
                "the local index has no country data",
            ));
        }
        if s.include_images {
            return Err(SearchError::Unsupported(
                "include_images",
                "the local index has no images",
            ));
        }
        Ok(())
    }

    async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let me = Arc::new(self.clone());
        let q = q.clone();
        tokio::task::spawn_blocking(move || me.search_sync(&q))
            .await
            .map_err(|e| SearchError::Backend(e.to_string()))?
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        let path = e.path();
        if kind.is_dir() {
            collect_files(&path, out);
        } else if kind.is_file() && indexable(&path) {
            out.push(path);
        }
    }
}

fn indexable(p: &Path) -> bool {
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    matches!(
        ext.to_ascii_lowercase().as_str(),
        "md" | "markdown" | "txt" | "html" | "htm"
    )
}

fn read_doc(root: &Path, path: &Path) -> Option<Doc> {
    if std::fs::metadata(path).ok()?.len() > MAX_FILE_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let ext = path.extension()?.to_string_lossy().to_ascii_lowercase();
    let (title, body) = if ext.starts_with("htm") {
        (title_of(&bytes).unwrap_or(stem), html_text(&bytes))
    } else {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let heading = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .map(|t| t.trim().to_string());
        (heading.unwrap_or(stem), text)
    };
    Some(Doc {
        title,
        url: url_of(root, path),
        body,
    })
}

/// `https://<domain>/<rest>` under a domain-named folder, else the file's `file://` URL.
fn url_of(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
    if let Some(first) = parts.next() {
        let rest: Vec<_> = parts.collect();
        if first.contains('.') && !rest.is_empty() {
            return format!("https://{}/{}", first.to_ascii_lowercase(), rest.join("/"));
        }
    }
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    url::Url::from_file_path(&abs).map_or_else(|_| abs.display().to_string(), |u| u.to_string())
}
