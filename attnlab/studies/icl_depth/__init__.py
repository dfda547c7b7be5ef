"""In-context regression with depth (Ahn, Cheng, Daneshmand and Sra 2023, arXiv 2306.00297): L
linear attention layers on prompts of linear regression learn L steps of preconditioned gradient
descent.

- :mod:`.prompts`: the prompts of the authors' two settings (``identity`` and ``rotated``), a
  pure function of ``(seed, step)``;
- :mod:`.forward`: the L-layer linear model in numpy (vectorized and a loop reference) and
  preconditioned gradient descent on the prompt's least squares;
- :mod:`.theory`: the exact population loss of L steps of GD, its optimal rates, the one-layer
  closed forms and the distance to identity.
"""
