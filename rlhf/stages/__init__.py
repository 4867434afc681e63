"""One straight training loop per stage (sft, rm, ppo, dpo), each with its config classes, the
code they share (``common``) and the one registry of stage names (``registry``). No stage imports
another; the pipeline and the command line reach a stage only through the registry.
"""
