"""Reports a person looks at: ``comp eda`` (``eda``), ``comp analyze`` (``analyze``), Grad-CAM (``cam``) and the HTML
page builder every report uses (``page``)."""
