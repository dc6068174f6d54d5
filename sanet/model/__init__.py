"""The SANet model (paper section 3): backbone split, AFE, MFE, assembly and ablation variants.

    from sanet.model.sanet import build_model
    model = build_model(params, num_classes)   # an nn.Module; see sanet.model.sanet for the forward contract

Modules: `sanet` (assembly and the Table 3 variants, `sanet.contracts.variants`), `backbone` (ResNet split and
ImageNet weights), `afe`, `mfe`, `cost` (parameters and MACs), `errors`. Like every package of the project, this one
re-exports nothing: import from the module that defines a name (importing the package costs nothing).
"""
