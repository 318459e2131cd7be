"""What the methods are built from, apart from the methods themselves (one module per method
in ``scaffolding_nats.methods``):

* ``base``: the classes a method subclasses and the helpers it uses (branch tasks and seeds,
  isolation, parameter checks, marking the caller's task done or failed);
* ``registry``: method kinds and named configs built into controller trees; ``reference``: the
  JSON Schema of every kind's parameters;
* ``answers``: answer extraction and normalisation; ``voting``: counting votes;
  ``confidence``: log-prob confidence measures; ``results``: the typed results;
* ``steps``: step-wise generation and the base of the tree searches (beam search, MCTS, ToT)."""
