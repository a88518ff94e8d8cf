"""After the search: retraining, the soup and the ensemble, the saved model folder, predicting and exporting."""
