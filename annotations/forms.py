from django import forms


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files, each checked on its own: cleans to [(file, problem)], problem "" for a good one. A bad
    file (empty, say) must not invalidate the form and with it the good files sent beside it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "video/*"}))
        kwargs["error_messages"] = {"empty": "the file is empty", "invalid": "not a file upload",
                                    "required": "Choose at least one video file.",
                                    **kwargs.get("error_messages", {})}
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        items = [d for d in (data if isinstance(data, (list, tuple)) else [data]) if d]
        if not items:
            if self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return []
        out = []
        for item in items:
            try:
                out.append((super().clean(item, initial), ""))
            except forms.ValidationError as exc:
                out.append((item, "; ".join(exc.messages)))
        return out


class UploadForm(forms.Form):
    files = MultipleFileField(label="Video files")
    transcript = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                                 help_text="Optional; applies to a single uploaded file")
    language = forms.CharField(max_length=16, required=False)


class MemberForm(forms.Form):
    """Add or change a member by exact username; unknown and not-addable users get the same answer."""

    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=[])
    trusted = forms.BooleanField(required=False, help_text="a trusted annotator's submits are accepted "
                                                          "without review once the overlap is met")

    def __init__(self, *args, addable, **kwargs):
        from .models import Role

        super().__init__(*args, **kwargs)
        self.addable = addable
        self.fields["role"].choices = Role.choices

    def clean_username(self):
        user = self.addable.filter(username=self.cleaned_data["username"].strip()).first()
        if user is None:
            raise forms.ValidationError("No user by that name that you can add.")
        return user
