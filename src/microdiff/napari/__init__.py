"""napari plugin (optional extra ``microdiff[napari]``): a prediction widget, readers for
model folders and MRC files, and simulated sample data. The manifest is ``napari.yaml``."""
