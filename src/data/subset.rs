//! Label-efficiency studies: keep only N labelled training images per class (`tessera train --labels-per-class N`).
//!
//! The choice depends only on the seed and on each image's stored source (its path, or file + index for IDX/CSV
//! datasets), never on the order the images were listed in, so the same seed picks the same images on every machine.
//! Subsets are nested: with one seed, the 10-per-class subset lies inside the 100-per-class one, so a label-efficiency
//! curve compares growing sets rather than unrelated draws.
//!
//! Classification keeps N images of each class. Detection keeps an image while any class drawn in it still has fewer
//! than N kept images (so a class can end up with more than N images, through images kept for another class).
//! The training images not kept are dropped ([`Beyond::Drop`]) or keep their pixels but lose their labels
//! ([`Beyond::Unlabel`]: the few-labels-many-images case, where fine-tuning with `--generative-aux` still learns from
//! every image). Training images that carried no label for the task are dropped or kept the same way.
//! The val and test splits are never touched.

use super::project::{fnv1a, ImageEntry, ImageSource, Project, Split, Task};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SubsetError {
    #[error("labels per class must be at least 1")]
    Zero,
    #[error("the project has no labelled training images for {0}")]
    NoLabelledTraining(&'static str),
}

/// What happens to the training images beyond the N labelled per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beyond {
    /// They leave the project.
    Drop,
    /// They stay, unlabelled (no class, no boxes, not marked as a labelled negative).
    Unlabel,
}

/// What [`keep_labels_per_class`] kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SubsetReport {
    /// Labels per class asked for.
    pub per_class_target: usize,
    /// Training images before, and labelled ones after.
    pub train_before: usize,
    pub train_kept: usize,
    /// Training images left without labels (with [`Beyond::Unlabel`]; 0 with [`Beyond::Drop`]).
    pub train_unlabelled: usize,
    /// Kept training images per class (an image counts once for every class it shows).
    pub per_class: Vec<usize>,
    /// Classes with fewer labelled training images than asked for: (class name, images available).
    pub short: Vec<(String, usize)>,
}

impl SubsetReport {
    /// One line for the terminal, e.g. "kept 100 of 9000 training images (10 labels per class)".
    pub fn summary(&self) -> String {
        let mut s = format!(
            "kept {} of {} training images ({} labels per class; val and test unchanged)",
            self.train_kept, self.train_before, self.per_class_target
        );
        if self.train_unlabelled > 0 {
            s.push_str(&format!("; {} more stay as unlabelled images", self.train_unlabelled));
        }
        if !self.short.is_empty() {
            let list: Vec<String> = self.short.iter().map(|(n, k)| format!("'{n}' has only {k}")).collect();
            s.push_str(&format!("; fewer than asked: {}", list.join(", ")));
        }
        s
    }
}

/// Leaves at most `n` labelled training images per class for `task` in `project` (see the module docs for
/// detection); the others are dropped or unlabelled, as `beyond` says. Deterministic in `seed`.
pub fn keep_labels_per_class(project: &mut Project, task: Task, n: usize, seed: u64, beyond: Beyond) -> Result<SubsetReport, SubsetError> {
    if n == 0 {
        return Err(SubsetError::Zero);
    }
    let num_classes = project.classes.len();
    let classes_of = |e: &ImageEntry| -> Vec<usize> {
        let mut c: Vec<usize> = match task {
            Task::Classify => e.class.into_iter().collect(),
            Task::Detect => e.boxes.iter().map(|b| b.class).collect(),
        };
        c.retain(|&k| k < num_classes);
        c.sort_unstable();
        c.dedup();
        c
    };

    let train = project.indices_in(Split::Train);
    let mut available = vec![0usize; num_classes];
    for &i in &train {
        for c in classes_of(&project.images[i]) {
            available[c] += 1;
        }
    }
    if available.iter().all(|&a| a == 0) {
        return Err(SubsetError::NoLabelledTraining(task.as_str()));
    }

    // A seeded pseudo-random order; the index only breaks (astronomically rare) ties so the order is total.
    let mut order: Vec<(u64, usize)> = train.iter().map(|&i| (draw_key(seed, &project.images[i].source), i)).collect();
    order.sort_unstable();

    let mut kept_per_class = vec![0usize; num_classes];
    let mut keep = vec![false; project.images.len()];
    for &(_, i) in &order {
        let classes = classes_of(&project.images[i]);
        if classes.iter().any(|&c| kept_per_class[c] < n) {
            keep[i] = true;
            for c in classes {
                kept_per_class[c] += 1;
            }
        }
    }

    let train_before = train.len();
    let mut train_unlabelled = 0;
    match beyond {
        Beyond::Drop => {
            let mut index = 0;
            project.images.retain(|e| {
                let k = e.split != Split::Train || keep[index];
                index += 1;
                k
            });
        }
        Beyond::Unlabel => {
            for &i in &train {
                if !keep[i] {
                    let e = &mut project.images[i];
                    e.class = None;
                    e.boxes.clear();
                    e.labeled = false;
                    train_unlabelled += 1;
                }
            }
        }
    }
    let short = (0..num_classes)
        .filter(|&c| available[c] < n)
        .map(|c| (project.classes[c].name.clone(), available[c]))
        .collect();
    Ok(SubsetReport {
        per_class_target: n,
        train_before,
        train_kept: keep.iter().filter(|&&k| k).count(),
        train_unlabelled,
        per_class: kept_per_class,
        short,
    })
}

/// A well-mixed 64-bit key from the seed and the image's stored source.
fn draw_key(seed: u64, source: &ImageSource) -> u64 {
    let name = match source {
        ImageSource::File(p) => p.to_string_lossy().replace('\\', "/"),
        ImageSource::Idx { file, index } => format!("{}#{index}", file.to_string_lossy().replace('\\', "/")),
        ImageSource::DigitsCsv { file, row } => format!("{}#{row}", file.to_string_lossy().replace('\\', "/")),
    };
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(name.as_bytes());
    splitmix64(fnv1a(&bytes))
}

/// The SplitMix64 finaliser: FNV-1a alone leaves similar names (img_001, img_002) with correlated keys.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::project::BBox;
    use std::collections::HashSet;

    fn entry(name: &str, split: Split, class: Option<usize>, boxes: Vec<usize>) -> ImageEntry {
        ImageEntry {
            source: ImageSource::File(name.into()),
            width: 32,
            height: 32,
            split,
            class,
            boxes: boxes
                .into_iter()
                .map(|c| BBox { xmin: 1.0, ymin: 1.0, xmax: 9.0, ymax: 9.0, class: c })
                .collect(),
            labeled: true,
        }
    }

    /// 3 classes x 20 train images, plus 5 val and 5 test per class and 4 unlabelled train images.
    fn classify_project() -> Project {
        let mut p = Project::new("t", Task::Classify, "/tmp/none");
        for c in ["a", "b", "c"] {
            p.class_index_or_add(c);
        }
        for c in 0..3 {
            for i in 0..20 {
                p.images.push(entry(&format!("train/{c}/{i:03}.png"), Split::Train, Some(c), vec![]));
            }
            for i in 0..5 {
                p.images.push(entry(&format!("val/{c}/{i:03}.png"), Split::Val, Some(c), vec![]));
                p.images.push(entry(&format!("test/{c}/{i:03}.png"), Split::Test, Some(c), vec![]));
            }
        }
        for i in 0..4 {
            p.images.push(entry(&format!("unlabelled/{i}.png"), Split::Train, None, vec![]));
        }
        p
    }

    fn names(p: &Project, split: Split) -> HashSet<String> {
        p.indices_in(split).into_iter().map(|i| format!("{:?}", p.images[i].source)).collect()
    }

    fn train_class_counts(p: &Project) -> Vec<usize> {
        let mut counts = vec![0; p.classes.len()];
        for i in p.indices_in(Split::Train) {
            counts[p.images[i].class.expect("only labelled train images remain")] += 1;
        }
        counts
    }

    #[test]
    fn keeps_exactly_n_per_class_and_leaves_val_test_alone() {
        let mut p = classify_project();
        let (val, test) = (names(&p, Split::Val), names(&p, Split::Test));
        let r = keep_labels_per_class(&mut p, Task::Classify, 7, 1, Beyond::Drop).unwrap();
        assert_eq!(train_class_counts(&p), vec![7, 7, 7]);
        assert_eq!((r.train_before, r.train_kept), (64, 21));
        assert_eq!(r.per_class, vec![7, 7, 7]);
        assert!(r.short.is_empty());
        assert_eq!(names(&p, Split::Val), val);
        assert_eq!(names(&p, Split::Test), test);
    }

    #[test]
    fn unlabel_keeps_every_image_and_the_same_labels_as_drop() {
        let mut dropped = classify_project();
        let mut unlabelled = classify_project();
        let before = unlabelled.images.len();
        keep_labels_per_class(&mut dropped, Task::Classify, 7, 1, Beyond::Drop).unwrap();
        let r = keep_labels_per_class(&mut unlabelled, Task::Classify, 7, 1, Beyond::Unlabel).unwrap();
        assert_eq!(unlabelled.images.len(), before, "no image leaves the project");
        assert_eq!((r.train_kept, r.train_unlabelled), (21, 43));
        assert!(r.summary().contains("43 more stay as unlabelled"), "{}", r.summary());
        let labelled = |p: &Project| -> HashSet<String> {
            p.indices_in(Split::Train).into_iter().filter(|&i| p.images[i].class.is_some()).map(|i| format!("{:?}", p.images[i].source)).collect()
        };
        assert_eq!(labelled(&unlabelled), names(&dropped, Split::Train), "the same images keep their labels");
    }

    #[test]
    fn same_seed_same_images_whatever_the_order() {
        let mut a = classify_project();
        let mut b = classify_project();
        b.images.reverse();
        keep_labels_per_class(&mut a, Task::Classify, 5, 42, Beyond::Drop).unwrap();
        keep_labels_per_class(&mut b, Task::Classify, 5, 42, Beyond::Drop).unwrap();
        assert_eq!(names(&a, Split::Train), names(&b, Split::Train));
    }

    #[test]
    fn different_seeds_pick_different_images() {
        let mut a = classify_project();
        let mut b = classify_project();
        keep_labels_per_class(&mut a, Task::Classify, 5, 1, Beyond::Drop).unwrap();
        keep_labels_per_class(&mut b, Task::Classify, 5, 2, Beyond::Drop).unwrap();
        assert_ne!(names(&a, Split::Train), names(&b, Split::Train));
    }

    #[test]
    fn smaller_subsets_are_nested_in_larger_ones() {
        let mut small = classify_project();
        let mut large = classify_project();
        keep_labels_per_class(&mut small, Task::Classify, 3, 9, Beyond::Drop).unwrap();
        keep_labels_per_class(&mut large, Task::Classify, 12, 9, Beyond::Drop).unwrap();
        assert!(names(&small, Split::Train).is_subset(&names(&large, Split::Train)));
    }

    #[test]
    fn asking_for_more_than_there_is_keeps_all_and_says_so() {
        let mut p = classify_project();
        let r = keep_labels_per_class(&mut p, Task::Classify, 25, 0, Beyond::Drop).unwrap();
        assert_eq!(train_class_counts(&p), vec![20, 20, 20]);
        assert_eq!(r.short, vec![("a".to_string(), 20), ("b".to_string(), 20), ("c".to_string(), 20)]);
        assert!(r.summary().contains("'a' has only 20"), "{}", r.summary());
    }

    #[test]
    fn zero_and_unlabelled_projects_are_errors() {
        let mut p = classify_project();
        assert_eq!(keep_labels_per_class(&mut p, Task::Classify, 0, 0, Beyond::Drop), Err(SubsetError::Zero));
        let mut unlabelled = classify_project();
        unlabelled.images.iter_mut().for_each(|e| e.class = None);
        let before = unlabelled.images.len();
        assert_eq!(
            keep_labels_per_class(&mut unlabelled, Task::Classify, 5, 0, Beyond::Drop),
            Err(SubsetError::NoLabelledTraining("classify"))
        );
        assert_eq!(unlabelled.images.len(), before, "an error must leave the project untouched");
    }

    #[test]
    fn detection_keeps_images_until_every_class_present_has_n() {
        let mut p = Project::new("d", Task::Detect, "/tmp/none");
        for c in ["rbc", "wbc"] {
            p.class_index_or_add(c);
        }
        // Class 0 is in every image, class 1 in every third one; two negatives with no boxes.
        for i in 0..30 {
            let boxes = if i % 3 == 0 { vec![0, 0, 1] } else { vec![0] };
            p.images.push(entry(&format!("img{i:02}.jpg"), Split::Train, None, boxes));
        }
        p.images.push(entry("neg1.jpg", Split::Train, None, vec![]));
        p.images.push(entry("neg2.jpg", Split::Train, None, vec![]));
        p.images.push(entry("val.jpg", Split::Val, None, vec![1]));
        let r = keep_labels_per_class(&mut p, Task::Detect, 4, 3, Beyond::Drop).unwrap();
        let kept: Vec<&ImageEntry> = p.images.iter().filter(|e| e.split == Split::Train).collect();
        let with = |c: usize| kept.iter().filter(|e| e.boxes.iter().any(|b| b.class == c)).count();
        assert!(with(1) >= 4 && with(0) >= 4, "every class gets at least N images");
        assert!(kept.len() <= 2 * 4, "an image is only kept while some class still needs it");
        assert!(kept.iter().all(|e| !e.boxes.is_empty()), "negatives are dropped");
        assert_eq!(r.train_kept, kept.len());
        assert_eq!(r.per_class, vec![with(0), with(1)]);
        assert_eq!(p.indices_in(Split::Val).len(), 1);
    }
}
