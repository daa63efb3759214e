"""Transfer strategies, weight transfer and the bookkeeping of a training run."""
