"""fastsae.interp: the analysis stage (eval with the SAE spliced in; later features, judge, dashboard,
steer). It reads what the other stages wrote (stores, SAE folders) through store, lm and saes;
it never imports harvest or train."""
