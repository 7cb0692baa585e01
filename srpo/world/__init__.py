"""The shapes world: the CPU default in which every attribute of every image is known.

- :mod:`srpo.world.shapes`: procedurally drawn scenes, captions, prompt parsing;
- :mod:`srpo.world.grader`: attributes read back from pixels;
- :mod:`srpo.world.generator`: the world's FLUX generator (fixed 8x8-block VAE, flow matching);
- :mod:`srpo.world.reward`: the world's CLIP reward (optionally with a planted bias);
- :mod:`srpo.world.edits`: the edit task (one-attribute instructions, drawn triples, done/kept grading);
- :mod:`srpo.world.edit_generator`: the world's edit model (a FLUX.1 Kontext trained on the triples);
- :mod:`srpo.world.bootstrap`: training both and checking them against the targets;
- publishing (:mod:`srpo.published`, below the world, since models and rewards resolve its names):
  where ``builtin:shapes-flux`` / ``builtin:shapes-clip`` / ``builtin:shapes-kontext`` resolve;
- :mod:`srpo.world.report`, :mod:`srpo.world.plots`: before/after tables, grids and curves;
- :mod:`srpo.world.experiments`: the benchmarks' shared train-and-measure loop.
"""
