"""Everything checked and loaded before Ray starts: the data, the backbones, the weights, the task folder's lock and
an earlier search's state."""
