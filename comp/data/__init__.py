"""Reading the competition: its folder and csv files (``competition``), ``comp init`` (``init``), ``comp check``
(``check``), ``comp folds`` (``folds``), images and their decode cache (``images``, ``preprocess``, ``cache``), the
training dataset and loaders (``dataset``) and ``comp sample`` (``sample``). Imports only comp's root modules."""
