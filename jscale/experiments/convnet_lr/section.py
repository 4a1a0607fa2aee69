def build(r): raise NotImplementedError
