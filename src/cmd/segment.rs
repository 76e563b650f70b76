use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use voxseg::radiomics_report::{write_for_segmentation, Request};
use voxseg::segment::{prepare, segment, stats, write, Model, Outputs};

/// Segment the organs of one CT and measure them.
///
/// Reads the CT (NIfTI, or a folder of DICOM CT slices: subfolders too, an enhanced
/// multi-frame CT, blanked UIDs), brings it to the model's
/// orientation, spacing and intensity scale, runs the network over the whole volume
/// in one pass, resamples the class probabilities back onto the CT's own grid, cleans
/// each organ up (largest component, holes filled) and measures it. Writes, each
/// atomically:
///
///   OUTDIR/labels.nii.gz  label map on the CT's exact grid and header (overlays the
///                         CT in 3D Slicer / ITK-SNAP)
///   OUTDIR/stats.json     per organ: volume_ml, HU statistics, touches_border, QC
///                         flags (same schema as `voxseg measure --json`), timings
///   OUTDIR/stats.csv      the same, one row per organ
///   OUTDIR/preview.png    with --preview: axial/coronal/sagittal through each organ
///   OUTDIR/rtstruct.dcm   with --rtstruct (DICOM input): RT Structure Set, one ROI
///                         per organ found, named by TG-263 where the model has it
///   OUTDIR/seg.dcm        with --dicom-seg (DICOM input): binary DICOM Segmentation
///   OUTDIR/radiomics.json with --radiomics: pyradiomics' features of every organ on
///   OUTDIR/radiomics.csv  the CT as given (its grid, HU), as `voxseg radiomics
///                         --json` / `--csv` write them
///
/// Without --model the package built into the binary runs: liver-ct-kul, the KU
/// Leuven whole-liver CT model (trained by its authors; see models/liver-ct-kul).
///
/// Example: voxseg segment ../shared/data/totalseg/example_ct.nii.gz -o out --preview
///          voxseg segment ct_dicom_folder/ -o out --rtstruct --dicom-seg
#[derive(clap::Args)]
// The lists and examples in this text are laid out by hand: clap must not rewrap them.
#[command(verbatim_doc_comment)]
pub struct SegmentArgs {
    /// The CT: NIfTI (.nii or .nii.gz), or a folder of DICOM CT slices.
    pub ct: PathBuf,
    /// For a DICOM folder holding several CT series: the one to read, by its
    /// SeriesInstanceUID or the key `voxseg inspect FOLDER` lists (`nouid-...` for
    /// series whose UID was blanked).
    #[arg(long, value_name = "UID_OR_KEY")]
    pub series: Option<String>,
    /// Also write rtstruct.dcm, an RT Structure Set on the input series (DICOM input only).
    #[arg(long)]
    pub rtstruct: bool,
    /// Also write seg.dcm, a DICOM Segmentation of the input series (DICOM input only).
    #[arg(long)]
    pub dicom_seg: bool,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Model package: a directory with model.toml, an nnU-Net v2 training folder (with
    /// plans.json, dataset.json, fold_*/checkpoint_final.pth), or the name of a package
    /// in ./models, $VOXSEG_MODELS, beside the binary or in ~/.local/share/voxseg/models.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub run_on: super::DeviceArgs,
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
    /// Also write preview.png.
    #[arg(long)]
    pub preview: bool,
    /// Also write radiomics.json and radiomics.csv: the 107 features of pyradiomics'
    /// default extractor for every organ of the model (see `voxseg radiomics`).
    #[arg(long)]
    pub radiomics: bool,
    /// pyradiomics parameter file (YAML) for --radiomics [default: pyradiomics' defaults].
    #[arg(long, value_name = "FILE", requires = "radiomics")]
    pub radiomics_params: Option<PathBuf>,
    /// Print stats.json's content.
    #[arg(long)]
    pub json: bool,
    /// Log each stage's time to stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

/// What the user must know about a DICOM source: files skipped, UIDs made up.
fn announce_source(series: &voxseg::dicom::CtSeries) {
    if series.skipped_files > 0 {
        eprintln!(
            "note: skipped {} file(s) that are not DICOM images in {}",
            series.skipped_files,
            series.dir.display()
        );
    }
    for note in &series.notes {
        eprintln!("note: {note}");
    }
}

pub fn run(args: SegmentArgs) -> Result<()> {
    if (args.rtstruct || args.dicom_seg) && !args.ct.is_dir() {
        bail!(
            "--rtstruct and --dicom-seg reference the CT's DICOM slices, so they need a folder of DICOM slices as input, not {}",
            args.ct.display()
        );
    }
    // A bad parameter file fails before the model loads.
    let radiomics = args.radiomics.then(|| Request::read(args.radiomics_params.as_deref())).transpose()?;
    let device = args.run_on.apply()?;
    // The current stage on a terminal (a CPU run takes a minute); nothing otherwise.
    // Cleared when done, and on an error too (when it is dropped).
    let spinner = ProgressBar::new_spinner().with_finish(ProgressFinish::AndClear);
    spinner.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message("loading the model");
    let model = Model::load(args.model.as_deref(), device)?.at_precision(args.precision.precision);
    spinner.suspend(|| model.announce());
    spinner.set_message(format!("reading and preprocessing {}", args.ct.display()));
    let prepared = prepare(&args.ct, args.series.as_deref(), &model.package)?;
    if let Some(series) = &prepared.dicom {
        spinner.suspend(|| announce_source(series));
    }
    spinner.set_message(format!(
        "running {} on {}, then cleaning up and measuring",
        model.package.name, model.device.name
    ));
    let mut seg = segment(&model, &prepared)?;
    spinner.set_message(format!("writing {}", args.output.display()));
    let outputs = Outputs { preview: args.preview, rtstruct: args.rtstruct, dicom_seg: args.dicom_seg };
    seg.timings = write(&args.output, &model, &prepared, &seg, outputs)?;
    let mut radiomics_ms = None;
    if let Some(request) = &radiomics {
        spinner.set_message("computing radiomics features");
        let start = Instant::now();
        write_for_segmentation(&args.output, &model.package, &prepared, &seg, request)?;
        radiomics_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
    }
    spinner.finish_and_clear();
    if args.verbose {
        let t = &seg.timings;
        eprintln!(
            "{} on {} ({}): read {:.0} ms, preprocess {:.0}, upload {:.0}, forward {:.0}, argmax {:.0}, download {:.0}, postprocess {:.0}, write {:.0}",
            model.package.name, model.device.name, seg.mode, t.read_ms, t.preprocess_ms, t.upload_ms, t.forward_ms,
            t.argmax_ms, t.download_ms, t.postprocess_ms, t.write_ms
        );
        if let Some(ms) = radiomics_ms {
            eprintln!("radiomics {ms:.0} ms");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats(&model, &prepared, &seg))?);
    } else {
        for s in &seg.structures {
            let m = &s.measurement;
            let flags = s.qc.map(|q| {
                voxseg::qc::QcFlags::NAMES
                    .iter()
                    .zip(q.values())
                    .filter(|(_, v)| *v)
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(",")
            });
            println!("{:<24} {:>10.3} mL  {}", s.name, m.volume_ml, flags.unwrap_or_default());
        }
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}
