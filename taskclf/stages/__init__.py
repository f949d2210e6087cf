"""The pipeline stages, one module each, in pipeline order.

``encode`` → ``model`` → ``calibrate`` → ``reject`` → ``smooth`` (majority
or Viterbi) → ``segment`` → ``merge``. Each module holds the stage's
vectorized kernel beside the transformer that uses it.
"""
