//! A Tessera project as a dataset: importing one re-roots it (image paths made relative to the new
//! project folder); exporting writes a copy of `tessera.json` that references the same images.

use std::path::Path;

use crate::data::export::{ExportError, Exporter};
use crate::data::import::{ImportError, ImportReport};
use crate::data::project::{ImageSource, Project};

pub fn import(src: &Path, project_root: &Path) -> Result<(Project, ImportReport), ImportError> {
    let old = Project::load(src)?;
    let project = rerooted(&old, project_root);
    let report = ImportReport::of_project(&project, "tessera", src);
    Ok((project, report))
}

/// The same project with its relative image paths rewritten for a project folder at `root`.
pub fn rerooted(p: &Project, root: &Path) -> Project {
    let mut q = p.clone();
    q.root = root.to_path_buf();
    for (i, im) in q.images.iter_mut().enumerate() {
        im.source = match p.source_of(i) {
            ImageSource::File(f) => ImageSource::File(crate::data::project::relative_to(&f, root)),
            ImageSource::Idx { file, index } => ImageSource::Idx { file: crate::data::project::relative_to(&file, root), index },
            ImageSource::DigitsCsv { file, row } => {
                ImageSource::DigitsCsv { file: crate::data::project::relative_to(&file, root), row }
            }
        };
    }
    q
}

pub fn write(ex: &mut Exporter) -> Result<(), ExportError> {
    let q = rerooted(ex.project, &ex.out);
    q.save().map_err(|e| ExportError::Unsupported(e.to_string()))?;
    for i in 0..ex.project.images.len() {
        ex.count(i);
    }
    Ok(())
}
