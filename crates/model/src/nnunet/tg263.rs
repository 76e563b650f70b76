//! AAPM TG-263 names for the class names TotalSegmentator's nnU-Net models use
//! (`dataset.json` labels), so RT structure sets carry the names planning systems
//! expect. Only names with a TG-263 entry are listed; others keep their own name.

const TABLE: &[(&str, &str)] = &[
    ("adrenal_gland_left", "Glnd_Adrenal_L"),
    ("adrenal_gland_right", "Glnd_Adrenal_R"),
    ("aorta", "A_Aorta"),
    ("brain", "Brain"),
    ("brainstem", "Brainstem"),
    ("colon", "Colon"),
    ("duodenum", "Duodenum"),
    ("esophagus", "Esophagus"),
    ("eye_left", "Eye_L"),
    ("eye_right", "Eye_R"),
    ("femur_left", "Femur_L"),
    ("femur_right", "Femur_R"),
    ("gallbladder", "Gallbladder"),
    ("heart", "Heart"),
    ("humerus_left", "Humerus_L"),
    ("humerus_right", "Humerus_R"),
    ("inferior_vena_cava", "V_Venacava_I"),
    ("kidney_left", "Kidney_L"),
    ("kidney_right", "Kidney_R"),
    ("larynx", "Larynx"),
    ("liver", "Liver"),
    ("lung_left", "Lung_L"),
    ("lung_right", "Lung_R"),
    ("lung_lower_lobe_left", "Lung_LLL"),
    ("lung_lower_lobe_right", "Lung_RLL"),
    ("lung_middle_lobe_right", "Lung_RML"),
    ("lung_upper_lobe_left", "Lung_LUL"),
    ("lung_upper_lobe_right", "Lung_RUL"),
    ("mandible", "Bone_Mandible"),
    ("optic_nerve_left", "OpticNrv_L"),
    ("optic_nerve_right", "OpticNrv_R"),
    ("pancreas", "Pancreas"),
    ("parotid_gland_left", "Parotid_L"),
    ("parotid_gland_right", "Parotid_R"),
    ("prostate", "Prostate"),
    ("rectum", "Rectum"),
    ("sacrum", "Sacrum"),
    ("small_bowel", "Bowel_Small"),
    ("spinal_cord", "SpinalCord"),
    ("spleen", "Spleen"),
    ("stomach", "Stomach"),
    ("submandibular_gland_left", "Glnd_Submand_L"),
    ("submandibular_gland_right", "Glnd_Submand_R"),
    ("thyroid_gland", "Glnd_Thyroid"),
    ("trachea", "Trachea"),
    ("urinary_bladder", "Bladder"),
];

/// The TG-263 name of a TotalSegmentator class name, when it has one.
pub fn tg263_name(class: &str) -> Option<&'static str> {
    TABLE.iter().find(|(c, _)| *c == class).map(|(_, t)| *t)
}
