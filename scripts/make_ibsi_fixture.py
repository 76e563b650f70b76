#!/usr/bin/env python3
"""The IBSI digital phantom, its published reference values and pyradiomics' answer on
it, as one small fixture for voxseg's radiomics tests (tests/fixtures/ibsi_phantom.json).

Sources (both CC BY 4.0):
  - the phantom (5 x 4 x 4 voxels of 2 mm, IBSI chapter 1, designed by A. Zwanenburg):
    phantom.nii.gz and mask.nii.gz of github.com/oncoray/mirp,
    test/data/ibsi_1_digital_phantom/nifti/{image,mask}/ (commit d8a6a72);
  - the reference values and tolerances of the IBSI 1 submission table (Zwanenburg et
    al., Radiology 2020, doi:10.1148/radiol.2020191145; reference manual
    arXiv:1612.07003), as github.com/medical-physics-usz/z-rad carries it in
    tests/data/ibsi_1_reference_values_digital_phantom.csv (commit e7731b1).

pyradiomics names are mapped to IBSI's by the table below: the 3-D features whose IBSI
aggregation is pyradiomics' own (texture features per direction, then averaged: IBSI's
"3D, averaged"; GLSZM, GLDM (IBSI's NGLDM) and NGTDM from one 3-D matrix: IBSI's "3D").
`as` says how a pyradiomics value reads as IBSI's: "same"; "excess" (pyradiomics'
Kurtosis is the plain fourth moment ratio, IBSI's the excess kurtosis: minus 3);
"population" (pyradiomics' PCA axis lengths come from numpy.cov, normalised by N - 1,
IBSI's from the population covariance, normalised by N: times sqrt(N / (N - 1))).

Usage:
    scripts/make_ibsi_fixture.py PHANTOM.nii.gz MASK.nii.gz REFERENCE.csv -o tests/fixtures/ibsi_phantom.json
"""
import argparse
import csv
import json
import logging

# pyradiomics feature -> (IBSI tag, how the value reads as IBSI's)
MAPPING = [
    ("shape_MeshVolume", "morph_volume", "same"),
    ("shape_VoxelVolume", "morph_vol_approx", "same"),
    ("shape_SurfaceArea", "morph_area_mesh", "same"),
    ("shape_SurfaceVolumeRatio", "morph_av", "same"),
    ("shape_Sphericity", "morph_sphericity", "same"),
    ("shape_Maximum3DDiameter", "morph_diam", "same"),
    ("shape_MajorAxisLength", "morph_pca_maj_axis", "population"),
    ("shape_MinorAxisLength", "morph_pca_min_axis", "population"),
    ("shape_LeastAxisLength", "morph_pca_least_axis", "population"),
    ("shape_Elongation", "morph_pca_elongation", "same"),
    ("shape_Flatness", "morph_pca_flatness", "same"),
    ("firstorder_Mean", "stat_mean", "same"),
    ("firstorder_Variance", "stat_var", "same"),
    ("firstorder_Skewness", "stat_skew", "same"),
    ("firstorder_Kurtosis", "stat_kurt", "excess"),
    ("firstorder_Median", "stat_median", "same"),
    ("firstorder_Minimum", "stat_min", "same"),
    ("firstorder_10Percentile", "stat_p10", "same"),
    ("firstorder_90Percentile", "stat_p90", "same"),
    ("firstorder_Maximum", "stat_max", "same"),
    ("firstorder_InterquartileRange", "stat_iqr", "same"),
    ("firstorder_Range", "stat_range", "same"),
    ("firstorder_MeanAbsoluteDeviation", "stat_mad", "same"),
    ("firstorder_RobustMeanAbsoluteDeviation", "stat_rmad", "same"),
    ("firstorder_Energy", "stat_energy", "same"),
    ("firstorder_RootMeanSquared", "stat_rms", "same"),
    ("firstorder_Entropy", "ih_entropy", "same"),
    ("firstorder_Uniformity", "ih_uniformity", "same"),
    ("glcm_MaximumProbability", "cm_joint_max_3D_avg", "same"),
    ("glcm_JointAverage", "cm_joint_avg_3D_avg", "same"),
    ("glcm_SumSquares", "cm_joint_var_3D_avg", "same"),
    ("glcm_JointEntropy", "cm_joint_entr_3D_avg", "same"),
    ("glcm_DifferenceAverage", "cm_diff_avg_3D_avg", "same"),
    ("glcm_DifferenceVariance", "cm_diff_var_3D_avg", "same"),
    ("glcm_DifferenceEntropy", "cm_diff_entr_3D_avg", "same"),
    ("glcm_SumAverage", "cm_sum_avg_3D_avg", "same"),
    ("glcm_SumEntropy", "cm_sum_entr_3D_avg", "same"),
    ("glcm_JointEnergy", "cm_energy_3D_avg", "same"),
    ("glcm_Contrast", "cm_contrast_3D_avg", "same"),
    ("glcm_Id", "cm_inv_diff_3D_avg", "same"),
    ("glcm_Idn", "cm_inv_diff_norm_3D_avg", "same"),
    ("glcm_Idm", "cm_inv_diff_mom_3D_avg", "same"),
    ("glcm_Idmn", "cm_inv_diff_mom_norm_3D_avg", "same"),
    ("glcm_InverseVariance", "cm_inv_var_3D_avg", "same"),
    ("glcm_Correlation", "cm_corr_3D_avg", "same"),
    ("glcm_Autocorrelation", "cm_auto_corr_3D_avg", "same"),
    ("glcm_ClusterTendency", "cm_clust_tend_3D_avg", "same"),
    ("glcm_ClusterShade", "cm_clust_shade_3D_avg", "same"),
    ("glcm_ClusterProminence", "cm_clust_prom_3D_avg", "same"),
    ("glcm_Imc1", "cm_info_corr1_3D_avg", "same"),
    ("glcm_Imc2", "cm_info_corr2_3D_avg", "same"),
    ("glrlm_ShortRunEmphasis", "rlm_sre_3D_avg", "same"),
    ("glrlm_LongRunEmphasis", "rlm_lre_3D_avg", "same"),
    ("glrlm_LowGrayLevelRunEmphasis", "rlm_lgre_3D_avg", "same"),
    ("glrlm_HighGrayLevelRunEmphasis", "rlm_hgre_3D_avg", "same"),
    ("glrlm_ShortRunLowGrayLevelEmphasis", "rlm_srlge_3D_avg", "same"),
    ("glrlm_ShortRunHighGrayLevelEmphasis", "rlm_srhge_3D_avg", "same"),
    ("glrlm_LongRunLowGrayLevelEmphasis", "rlm_lrlge_3D_avg", "same"),
    ("glrlm_LongRunHighGrayLevelEmphasis", "rlm_lrhge_3D_avg", "same"),
    ("glrlm_GrayLevelNonUniformity", "rlm_glnu_3D_avg", "same"),
    ("glrlm_GrayLevelNonUniformityNormalized", "rlm_glnu_norm_3D_avg", "same"),
    ("glrlm_RunLengthNonUniformity", "rlm_rlnu_3D_avg", "same"),
    ("glrlm_RunLengthNonUniformityNormalized", "rlm_rlnu_norm_3D_avg", "same"),
    ("glrlm_RunPercentage", "rlm_r_perc_3D_avg", "same"),
    ("glrlm_GrayLevelVariance", "rlm_gl_var_3D_avg", "same"),
    ("glrlm_RunVariance", "rlm_rl_var_3D_avg", "same"),
    ("glrlm_RunEntropy", "rlm_rl_entr_3D_avg", "same"),
    ("glszm_SmallAreaEmphasis", "szm_sze_3D", "same"),
    ("glszm_LargeAreaEmphasis", "szm_lze_3D", "same"),
    ("glszm_LowGrayLevelZoneEmphasis", "szm_lgze_3D", "same"),
    ("glszm_HighGrayLevelZoneEmphasis", "szm_hgze_3D", "same"),
    ("glszm_SmallAreaLowGrayLevelEmphasis", "szm_szlge_3D", "same"),
    ("glszm_SmallAreaHighGrayLevelEmphasis", "szm_szhge_3D", "same"),
    ("glszm_LargeAreaLowGrayLevelEmphasis", "szm_lzlge_3D", "same"),
    ("glszm_LargeAreaHighGrayLevelEmphasis", "szm_lzhge_3D", "same"),
    ("glszm_GrayLevelNonUniformity", "szm_glnu_3D", "same"),
    ("glszm_GrayLevelNonUniformityNormalized", "szm_glnu_norm_3D", "same"),
    ("glszm_SizeZoneNonUniformity", "szm_zsnu_3D", "same"),
    ("glszm_SizeZoneNonUniformityNormalized", "szm_zsnu_norm_3D", "same"),
    ("glszm_ZonePercentage", "szm_z_perc_3D", "same"),
    ("glszm_GrayLevelVariance", "szm_gl_var_3D", "same"),
    ("glszm_ZoneVariance", "szm_zs_var_3D", "same"),
    ("glszm_ZoneEntropy", "szm_zs_entr_3D", "same"),
    ("gldm_SmallDependenceEmphasis", "ngl_lde_3D", "same"),
    ("gldm_LargeDependenceEmphasis", "ngl_hde_3D", "same"),
    ("gldm_LowGrayLevelEmphasis", "ngl_lgce_3D", "same"),
    ("gldm_HighGrayLevelEmphasis", "ngl_hgce_3D", "same"),
    ("gldm_SmallDependenceLowGrayLevelEmphasis", "ngl_ldlge_3D", "same"),
    ("gldm_SmallDependenceHighGrayLevelEmphasis", "ngl_ldhge_3D", "same"),
    ("gldm_LargeDependenceLowGrayLevelEmphasis", "ngl_hdlge_3D", "same"),
    ("gldm_LargeDependenceHighGrayLevelEmphasis", "ngl_hdhge_3D", "same"),
    ("gldm_GrayLevelNonUniformity", "ngl_glnu_3D", "same"),
    ("gldm_DependenceNonUniformity", "ngl_dcnu_3D", "same"),
    ("gldm_DependenceNonUniformityNormalized", "ngl_dcnu_norm_3D", "same"),
    ("gldm_GrayLevelVariance", "ngl_gl_var_3D", "same"),
    ("gldm_DependenceVariance", "ngl_dc_var_3D", "same"),
    ("gldm_DependenceEntropy", "ngl_dc_entr_3D", "same"),
    ("ngtdm_Coarseness", "ngt_coarseness_3D", "same"),
    ("ngtdm_Contrast", "ngt_contrast_3D", "same"),
    ("ngtdm_Busyness", "ngt_busyness_3D", "same"),
    ("ngtdm_Complexity", "ngt_complexity_3D", "same"),
    ("ngtdm_Strength", "ngt_strength_3D", "same"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phantom")
    ap.add_argument("mask")
    ap.add_argument("reference")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()

    import nibabel as nib
    import numpy as np
    import radiomics
    from radiomics import featureextractor

    image = nib.load(args.phantom)
    mask = nib.load(args.mask)
    img = np.asarray(image.dataobj).astype(float)
    msk = np.asarray(mask.dataobj).astype(int)
    spacing = [float(s) for s in image.header.get_zooms()]

    # The phantom is already discretised (grey levels 1..6): binWidth 1 leaves it as it is.
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ext = featureextractor.RadiomicsFeatureExtractor(binWidth=1)
    ext.enableAllFeatures()
    result = ext.execute(args.phantom, args.mask, label=1)
    pyrad = {k: float(v) for k, v in result.items() if not k.startswith("diagnostics_")}

    with open(args.reference, encoding="utf-8-sig") as f:
        reference = {r["tag"]: r for r in csv.DictReader(f)}
    features = []
    for name, tag, how in MAPPING:
        r = reference[tag]
        features.append(
            {
                "pyradiomics": f"original_{name}",
                "ibsi": tag,
                "ibsi_name": f"{r['family']}: {r['feature']}",
                "value": float(r["reference value"]),
                "tolerance": float(r["tolerance"]),
                "as": how,
            }
        )
    out = {
        "source": {
            "phantom": "IBSI 1 digital phantom (CC BY 4.0, design A. Zwanenburg): github.com/oncoray/mirp "
            "test/data/ibsi_1_digital_phantom/nifti (commit d8a6a72)",
            "reference": "IBSI 1 submission table, Zwanenburg et al., Radiology 2020 (doi:10.1148/radiol.2020191145), "
            "reference manual arXiv:1612.07003 (CC BY 4.0), as github.com/medical-physics-usz/z-rad "
            "tests/data/ibsi_1_reference_values_digital_phantom.csv (commit e7731b1)",
            "made_by": "scripts/make_ibsi_fixture.py",
        },
        "pyradiomics_version": radiomics.__version__,
        "settings": {"binWidth": 1},
        "spacing_mm_zyx": spacing[::-1],
        # [z][y][x]: NIfTI's (i, j, k) = (x, y, z), slowest axis first as voxseg_radiomics takes it.
        "image_zyx": np.transpose(img, (2, 1, 0)).astype(int).tolist(),
        "mask_zyx": np.transpose(msk, (2, 1, 0)).tolist(),
        "pyradiomics": pyrad,
        "features": features,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
