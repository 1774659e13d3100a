//! The import's report: one line per field with behaviour, what became of
//! it; the plugins to port; the files skipped. Printed, written as
//! `IMPORT.md`, and given to scripts as JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Port;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Mapped,
    Approximate,
    NotMapped,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Mapped => "mapped",
            Status::Approximate => "approximate",
            Status::NotMapped => "not mapped",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub api: String,
    pub field: String,
    pub status: Status,
    pub note: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub entries: Vec<Entry>,
    /// The APIs written, with the file each came from.
    pub apis: Vec<(String, PathBuf)>,
    /// Files that are not definitions, and why.
    pub skipped: Vec<(PathBuf, String)>,
    pub ports: Vec<Port>,
    /// Fields present at their default values (false, empty, 0): no
    /// behaviour to map.
    pub defaults: usize,
    /// Whether `--stub-plugins` wrote the plugins to port.
    pub stubs: bool,
    pub notes: Vec<String>,
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut port = s.serialize_struct("Port", 5)?;
        port.serialize_field("name", &self.name)?;
        port.serialize_field("function", &self.function)?;
        port.serialize_field("kind", &format!("{:?}", self.kind).to_lowercase())?;
        port.serialize_field("driver", &self.driver)?;
        port.serialize_field("origin", &self.origin)?;
        port.end()
    }
}

impl Report {
    pub fn add(&mut self, api: &str, field: &str, status: Status, note: String) {
        self.entries.push(Entry {
            api: api.to_owned(),
            field: field.to_owned(),
            status,
            note,
        });
    }

    pub fn skip(&mut self, file: &Path, why: &str) {
        self.skipped.push((file.to_owned(), why.to_owned()));
    }

    pub fn count(&self, status: Status) -> usize {
        self.entries.iter().filter(|e| e.status == status).count()
    }

    /// The short summary printed at the end.
    pub fn summary(&self, out: &Path) -> String {
        let mut text = format!(
            "imported {} API(s) into {}: {} fields mapped, {} approximately, {} not mapped ({} at their defaults)\n",
            self.apis.len(),
            out.display(),
            self.count(Status::Mapped),
            self.count(Status::Approximate),
            self.count(Status::NotMapped),
            self.defaults,
        );
        if !self.ports.is_empty() {
            text.push_str(&format!(
                "{} plugin(s) to port from Tyk middleware{}\n",
                self.ports.len(),
                if self.stubs {
                    " (stubs written under plugins/)"
                } else {
                    " (their paths are TODO: see IMPORT.md, or run again with --stub-plugins)"
                }
            ));
        }
        for (file, why) in &self.skipped {
            text.push_str(&format!("skipped {}: {why}\n", file.display()));
        }
        for note in &self.notes {
            text.push_str(&format!("note: {note}\n"));
        }
        text.push_str(&format!("report: {}\n", out.join("IMPORT.md").display()));
        text
    }

    /// `IMPORT.md`.
    pub fn markdown(&self) -> String {
        let mut md = String::from("# Imported from Tyk\n\n");
        md.push_str(&format!(
            "`portcullis import tyk` wrote {} API file(s) under `apis/` and `gateway.yaml`. \
             {} fields were mapped, {} mapped approximately, {} not mapped; {} fields were at their \
             Tyk defaults and carry no behaviour.\n\n",
            self.apis.len(),
            self.count(Status::Mapped),
            self.count(Status::Approximate),
            self.count(Status::NotMapped),
            self.defaults
        ));
        md.push_str("Check the configuration with `portcullis validate --config gateway.yaml`");
        if !self.ports.is_empty() && !self.stubs {
            md.push_str(" once the plugins below exist");
        }
        md.push_str(".\n\n");
        if !self.apis.is_empty() {
            md.push_str("## APIs\n\n| API | from |\n|---|---|\n");
            for (id, source) in &self.apis {
                md.push_str(&format!("| `apis/{id}.yaml` | `{}` |\n", source.display()));
            }
            md.push('\n');
        }
        if !self.ports.is_empty() {
            md.push_str(
                "## Code to port\n\nEach Tyk custom middleware is a plugin reference with the same function name. ",
            );
            if self.stubs {
                md.push_str("A scaffold of each (the `portcullis plugin new` template, exporting that name) is under `plugins/`, built into the `.wasm` the API names: put the middleware's logic in its `src/lib.rs` (see docs/writing-plugins.md).\n\n");
            } else {
                md.push_str("Write each as a Portcullis plugin (`portcullis plugin new NAME`, see docs/writing-plugins.md) and build it to the path the API names, or run the import again with `--stub-plugins`.\n\n");
            }
            md.push_str("| plugin | function | kind | Tyk driver | where |\n|---|---|---|---|---|\n");
            for p in &self.ports {
                md.push_str(&format!(
                    "| `plugins/{}.wasm` | `{}` | {:?} | {} | {} |\n",
                    p.name, p.function, p.kind, p.driver, p.origin
                ));
            }
            md.push('\n');
        }
        for status in [Status::NotMapped, Status::Approximate, Status::Mapped] {
            let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.status == status).collect();
            if entries.is_empty() {
                continue;
            }
            md.push_str(&format!(
                "## {}\n\n| API | Tyk field | note |\n|---|---|---|\n",
                capitalise(status.label())
            ));
            for e in entries {
                md.push_str(&format!(
                    "| {} | `{}` | {} |\n",
                    e.api,
                    e.field,
                    e.note.replace('|', "\\|")
                ));
            }
            md.push('\n');
        }
        if !self.skipped.is_empty() {
            md.push_str("## Files skipped\n\n");
            for (file, why) in &self.skipped {
                md.push_str(&format!("- `{}`: {why}\n", file.display()));
            }
            md.push('\n');
        }
        for note in &self.notes {
            md.push_str(&format!("Note: {note}\n\n"));
        }
        md
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}
