"""The code file of the logged pyfunc model (MLflow's models from code).

``mlflow.pyfunc.load_model`` runs this file to get the model object, so
nothing of the model is pickled: the logged model is this file, the ``bnn``
package (``code_paths``) and the posterior's files (``artifacts``).
"""

from mlflow.models import set_model

from bnn.serving.pyfunc_model import BnnPyfunc

set_model(BnnPyfunc())
