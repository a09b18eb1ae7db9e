"""The unlearning methods: RFA and the baselines behind one signature.

types      UnlearnTask, UnlearnResult, MethodConfig, Method (what every method takes and returns)
registry   METHODS / get_method: name -> method
rfa        RFA as prepare -> loop -> finish
rfa_loss   the loss terms, pure tensor functions
targets    forget targets built from the teacher's view (registry FORGET_TARGETS)
taps       feature taps and the teacher's no-grad passes
batches    which forget samples each step reads
stopping   StopRule: early stop on reaching the target or stalling
adversary  the in-loop linear probe for class unlearning
lora       peft adapters, the frozen-BatchNorm policy, frozen prefixes
baselines  Retrain, FT, NegGrad+, RL, SalUn, SCRUB
"""
