//! recur's self-contained HTML pages (`recur hello --html`, `recur gradflow --html`): one file
//! each, no network, the numbers embedded as JSON. The templates are in page/: each page's own
//! HTML and script, with the shared stylesheet (page/style.css) and script (page/common.js: SVG
//! helpers and the log-scale line chart) put in where the template says.

use anyhow::Result;
use std::path::Path;

/// The page `template` (with `/*STYLE*/`, `/*COMMON*/` and `/*DATA*/` where the shared
/// stylesheet, the shared script and the data go) with `data` embedded.
pub fn render(template: &str, data: &serde_json::Value) -> Result<String> {
    // inside <script>, "</" would end the element: JSON allows "<\/" for it
    let text = serde_json::to_string(data)?.replace("</", "<\\/");
    Ok(template
        .replace("/*STYLE*/", include_str!("page/style.css"))
        .replace("/*COMMON*/", include_str!("page/common.js"))
        .replace("/*DATA*/", &text))
}

/// Writes a page, naming the file and the reason when it cannot.
pub fn write(path: &Path, page: &str) -> Result<()> {
    std::fs::write(path, page).map_err(|e| {
        anyhow::anyhow!(
            "cannot write '{}': {}",
            path.display(),
            recur::error::io_reason(&e)
        )
    })
}
